package io.solray.runtime;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * The versions this client speaks: solray refuses a peer of another protocol
 * or solray version at the handshake (solray/_private/transport.py), so these
 * must equal solray/_private/protocol.py's PROTOCOL_VERSION and
 * solray/__init__.py's __version__ (VersionTest checks that they do).
 */
public final class Version {
  public static final int PROTOCOL_VERSION = 4;
  public static final String SOLRAY_VERSION = "0.1.0";

  private Version() {}

  /** The handshake's VERSION block: u16 LE protocol version, the version string NUL-padded to 16. */
  static byte[] block() {
    ByteBuffer b = ByteBuffer.allocate(18).order(ByteOrder.LITTLE_ENDIAN);
    b.putShort((short) PROTOCOL_VERSION);
    byte[] name = SOLRAY_VERSION.getBytes(StandardCharsets.UTF_8);
    b.put(name, 0, Math.min(16, name.length));
    return b.array();
  }

  static String describe(byte[] block) {
    ByteBuffer b = ByteBuffer.wrap(block).order(ByteOrder.LITTLE_ENDIAN);
    int protocol = Short.toUnsignedInt(b.getShort());
    String name = new String(block, 2, 16, StandardCharsets.UTF_8).replace("\0", "");
    return "solray " + name + " (protocol " + protocol + ")";
  }
}
