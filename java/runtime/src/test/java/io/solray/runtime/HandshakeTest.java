package io.solray.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.ray.api.Ray;
import io.ray.api.exception.RayException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** The token handshake and the versions it compares, against a real cluster. */
class HandshakeTest extends io.solray.tests.ClusterAccess {
  @Test
  void aWrongTokenIsRefusedAtTheHandshake() {
    String[] hostPort = address().split(":");
    byte[] wrong = HexFormat.of().parseHex("00112233445566778899aabbccddeeff");
    RayException e = assertThrows(RayException.class,
        () -> new ClientConnection(hostPort[0], Integer.parseInt(hostPort[1]), wrong));
    assertTrue(e.getMessage().contains("refused this client's token"), e.getMessage());
  }

  @Test
  void theRightTokenConnects() throws Exception {
    String[] hostPort = address().split(":");
    byte[] token = HexFormat.of().parseHex(Files.readString(Path.of(System.getenv("SOLRAY_TOKEN_FILE"))).strip());
    try (ClientConnection c = new ClientConnection(hostPort[0], Integer.parseInt(hostPort[1]), token)) {
      assertTrue(c.isOpen());
    }
  }

  @Test
  void anUnsupportedSettingIsNamed() {
    Ray.shutdown();
    System.setProperty("ray.run-mode", "LOCAL");
    try {
      RayException e = assertThrows(RayException.class, Ray::init);
      assertTrue(e.getMessage().contains("ray.run-mode"), e.getMessage());
    } finally {
      System.clearProperty("ray.run-mode");
      Ray.init();
    }
  }

  /** The handshake refuses another version: these must be the Python side's. */
  @Test
  void versionsAreThePythonSides() throws Exception {
    Path repo = Path.of(System.getProperty("user.dir")).resolve("../..").normalize();
    Matcher protocol = Pattern.compile("(?m)^PROTOCOL_VERSION = (\\d+)")
        .matcher(Files.readString(repo.resolve("solray/_private/protocol.py")));
    Matcher version = Pattern.compile("(?m)^__version__ = \"([^\"]+)\"")
        .matcher(Files.readString(repo.resolve("solray/__init__.py")));
    assertTrue(protocol.find() && version.find());
    assertEquals(Integer.parseInt(protocol.group(1)), Version.PROTOCOL_VERSION);
    assertEquals(version.group(1), Version.SOLRAY_VERSION);
  }
}
