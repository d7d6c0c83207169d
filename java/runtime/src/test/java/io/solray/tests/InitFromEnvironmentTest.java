package io.solray.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Ray.init() as a user's driver meets it: a JVM of its own whose address
 * (RAY_ADDRESS) and token (SOLRAY_TOKEN, SOLRAY_TOKEN_FILE) come from the
 * environment.
 */
class InitFromEnvironmentTest extends ClusterAccess {
  private record Run(int exitCode, String output) {}

  private static Run probe(Map<String, String> env) throws Exception {
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    ProcessBuilder pb = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
        InitProbe.class.getName());
    pb.environment().keySet().removeAll(List.of("SOLRAY_TOKEN", "SOLRAY_TOKEN_FILE", "RAY_ADDRESS"));
    pb.environment().putAll(env);
    pb.redirectErrorStream(true);
    Process p = pb.start();
    p.getOutputStream().close();
    String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the driver did not exit: " + output);
    return new Run(p.exitValue(), output);
  }

  private static String token() throws Exception {
    return Files.readString(Path.of(System.getenv("SOLRAY_TOKEN_FILE"))).strip();
  }

  @Test
  void theTokenFileOrTheTokenConnects() throws Exception {
    Run byFile = probe(Map.of("RAY_ADDRESS", address(), "SOLRAY_TOKEN_FILE", System.getenv("SOLRAY_TOKEN_FILE")));
    assertEquals(new Run(0, "got 41\n"), byFile);
    Run byValue = probe(Map.of("RAY_ADDRESS", "ray://" + address(), "SOLRAY_TOKEN", token()));
    assertEquals(new Run(0, "got 41\n"), byValue);
  }

  @Test
  void aWrongTokenIsRefused() throws Exception {
    String wrong = token().startsWith("0") ? "1" + token().substring(1) : "0" + token().substring(1);
    Run run = probe(Map.of("RAY_ADDRESS", address(), "SOLRAY_TOKEN", wrong));
    assertEquals(3, run.exitCode(), run.output());
    assertTrue(run.output().contains("refused this client's token"), run.output());
  }

  @Test
  void missingSettingsAreNamed() throws Exception {
    Run noToken = probe(Map.of("RAY_ADDRESS", address()));
    assertEquals(3, noToken.exitCode(), noToken.output());
    assertTrue(noToken.output().contains("no cluster token: set SOLRAY_TOKEN_FILE"), noToken.output());
    Run noAddress = probe(Map.of("SOLRAY_TOKEN", token()));
    assertEquals(3, noAddress.exitCode(), noAddress.output());
    assertTrue(noAddress.output().contains("no cluster address"), noAddress.output());
  }
}
