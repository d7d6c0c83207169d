package io.solray.tests;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * A real solray cluster for the tests: `solray start --head` on free ports,
 * in a temporary directory of its own, with a token made here and written to
 * the file SOLRAY_TOKEN_FILE names (the pom sets that variable for the test
 * JVM, which is where Ray.init() reads it). Stopping it ends exactly its own
 * processes (those whose command line names a path in its temporary directory, and
 * everything they started): `solray stop` would stop every cluster of this
 * user on the machine. Python: SOLRAY_TEST_PYTHON, else python3.
 */
public final class TestCluster implements ExtensionContext.Store.CloseableResource {
  private static final Duration START_TIMEOUT = Duration.ofSeconds(120);

  private final String address; // the client server, HOST:PORT
  final Path tokenFile;
  private final Path tempDir; // its own: every process of the cluster names a path in it
  private boolean stopped;

  private TestCluster(String address, Path tokenFile, Path tempDir) {
    this.address = address;
    this.tokenFile = tokenFile;
    this.tempDir = tempDir;
  }

  public static TestCluster start() throws IOException, InterruptedException {
    String tokenPath = System.getenv("SOLRAY_TOKEN_FILE");
    if (tokenPath == null) {
      throw new IllegalStateException("SOLRAY_TOKEN_FILE is not set: run the tests with Maven (the pom sets it)");
    }
    Path tokenFile = Path.of(tokenPath);
    Files.createDirectories(tokenFile.getParent());
    byte[] token = new byte[32];
    new SecureRandom().nextBytes(token);
    Files.deleteIfExists(tokenFile);
    Files.createFile(tokenFile, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
    Files.writeString(tokenFile, HexFormat.of().formatHex(token));

    Path tempDir = Files.createTempDirectory("solray-java-test");
    String python = System.getenv().getOrDefault("SOLRAY_TEST_PYTHON", "python3");
    ProcessBuilder pb = new ProcessBuilder(python, "-m", "solray.cli", "start", "--head",
        "--port", "0", "--ray-client-server-port", "0", "--include-dashboard", "false",
        "--num-cpus", "4", "--token-file", tokenFile.toString(), "--temp-dir", tempDir.toString());
    pb.environment().keySet().removeAll(List.of("SOLRAY_TOKEN", "SOLRAY_TOKEN_FILE", "RAY_ADDRESS"));
    Path log = tempDir.resolve("start.log"); // a file, not a pipe: a hung start cannot block the read
    pb.redirectErrorStream(true).redirectOutput(log.toFile()).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
    Process p = pb.start();
    boolean exited = p.waitFor(START_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    String output = Files.readString(log, StandardCharsets.UTF_8);
    Matcher client = Pattern.compile("ray://([^\"\\s]+)").matcher(output);
    TestCluster cluster = new TestCluster(client.find() ? client.group(1) : null, tokenFile, tempDir);
    if (!exited || p.exitValue() != 0 || cluster.address == null) {
      p.destroyForcibly();
      cluster.stop(); // whatever it started
      throw new IllegalStateException("`solray start --head` failed (" + python
          + " must have solray installed: set SOLRAY_TEST_PYTHON):\n" + output);
    }
    Runtime.getRuntime().addShutdownHook(new Thread(cluster::stopQuietly));
    return cluster;
  }

  /** The client server's HOST:PORT, for -Dray.address. */
  public String address() {
    return address;
  }

  /** Its processes: those naming a path in its temporary directory, and their descendants. */
  List<ProcessHandle> processes() {
    String root = tempDir.toString() + "/";
    Set<ProcessHandle> found = new LinkedHashSet<>();
    try (Stream<ProcessHandle> all = ProcessHandle.allProcesses()) {
      all.filter(p -> cmdline(p).stream().anyMatch(a -> a.contains(root))).forEach(p -> {
        found.add(p);
        p.descendants().forEach(found::add);
      });
    }
    found.removeIf(p -> !p.isAlive());
    return new ArrayList<>(found);
  }

  static List<String> cmdline(ProcessHandle p) {
    try {
      byte[] raw = Files.readAllBytes(Path.of("/proc", Long.toString(p.pid()), "cmdline"));
      return Arrays.asList(new String(raw, StandardCharsets.UTF_8).split("\0"));
    } catch (IOException e) {
      return List.of(); // gone, or not ours to read
    }
  }

  /** Its sessions' shared memory (solray_<session directory name>_...). */
  private List<String> sharedMemory() {
    List<String> prefixes;
    try (Stream<Path> sessions = Files.find(tempDir, 2, (path, attrs) -> attrs.isDirectory()
        && path.getParent() != null && path.getParent().getFileName().toString().startsWith("solray-sessions-"))) {
      prefixes = sessions.map(d -> "solray_" + d.getFileName() + "_").toList();
    } catch (IOException e) {
      return List.of();
    }
    try (Stream<Path> entries = Files.list(Path.of("/dev/shm"))) {
      return entries.map(e -> e.getFileName().toString())
          .filter(n -> prefixes.stream().anyMatch(n::startsWith)).toList();
    } catch (IOException e) {
      return List.of();
    }
  }

  /** Nodes first (they stop their workers and remove their stores), then the rest; kill what is left. */
  public synchronized void stop() {
    if (stopped) {
      return;
    }
    stopped = true;
    List<ProcessHandle> procs = processes();
    List<ProcessHandle> nodes =
        procs.stream().filter(p -> cmdline(p).contains("solray._private.node")).toList();
    terminate(nodes);
    terminate(processes());
    List<ProcessHandle> left = processes();
    left.forEach(ProcessHandle::destroyForcibly);
    waitFor(() -> processes().isEmpty(), Duration.ofSeconds(30), () -> "still running: " + processes());
    waitFor(() -> sharedMemory().isEmpty(), Duration.ofSeconds(10),
        () -> "/dev/shm entries left behind: " + sharedMemory());
    deleteTree(tempDir);
    try {
      Files.deleteIfExists(tokenFile);
    } catch (IOException e) {
      // reported by nothing: the build directory is the build's
    }
  }

  private static void terminate(List<ProcessHandle> procs) {
    procs.forEach(ProcessHandle::destroy);
    long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
    for (ProcessHandle p : procs) {
      try {
        p.onExit().get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
      } catch (Exception e) {
        p.destroyForcibly();
      }
    }
  }

  private void stopQuietly() {
    try {
      stop();
    } catch (RuntimeException e) {
      System.err.println("stopping the test cluster: " + e);
    }
  }

  private static void deleteTree(Path root) {
    try (Stream<Path> walk = Files.walk(root)) {
      walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      // already gone
    }
  }

  /** Wait until the condition holds, polling; fail with the message after the timeout. */
  static void waitFor(BooleanSupplier condition, Duration timeout, Supplier<String> message) {
    long deadline = System.nanoTime() + timeout.toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("timed out after " + timeout + ": " + message.get());
      }
      try {
        Thread.sleep(50);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new AssertionError("interrupted while waiting: " + message.get());
      }
    }
  }

  @Override
  public void close() {
    stop();
  }
}
