package io.solray.runtime;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * solray's framing (solray/_private/protocol.py): a 12-byte prefix (header
 * length u32 LE, payload length u64 LE), the msgpack header [msg_type,
 * request_id, body, buffer_lengths], then the buffers back to back. Used on the
 * driver's socket and on the JVM executor's pipes alike.
 */
public final class Frames {
  static final int REPLY = 1;
  static final int ERROR_REPLY = 2;
  private static final int MAX_HEADER = 64 * 1024 * 1024;

  /** A decoded frame; body is a plain Java value (Msgpack.read). */
  public record Frame(int type, long requestId, Object body, List<byte[]> buffers) {}

  private Frames() {}

  /** The whole frame as one array, so that a writer holding a lock writes it in one go. */
  static byte[] encode(int type, long requestId, Object body, List<byte[]> buffers) {
    List<Long> lengths = new ArrayList<>();
    long payload = 0;
    for (byte[] b : buffers) {
      lengths.add((long) b.length);
      payload += b.length;
    }
    byte[] header = Msgpack.pack(Arrays.asList(type, requestId, body, lengths));
    if (payload + header.length + 12 > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("a frame of " + payload + " bytes is too large for this client");
    }
    ByteBuffer out = ByteBuffer.allocate(12 + header.length + (int) payload).order(ByteOrder.LITTLE_ENDIAN);
    out.putInt(header.length).putLong(payload).put(header);
    for (byte[] b : buffers) {
      out.put(b);
    }
    return out.array();
  }

  static void write(OutputStream out, int type, long requestId, Object body, List<byte[]> buffers)
      throws IOException {
    byte[] frame = encode(type, requestId, body, buffers);
    synchronized (out) {
      out.write(frame);
      out.flush();
    }
  }

  /** The next frame, or null at a clean end of stream (between frames). */
  @SuppressWarnings("unchecked")
  static Frame read(DataInputStream in) throws IOException {
    byte[] prefix = new byte[12];
    int first = in.read(prefix, 0, 1);
    if (first < 0) {
      return null;
    }
    in.readFully(prefix, 1, 11);
    ByteBuffer p = ByteBuffer.wrap(prefix).order(ByteOrder.LITTLE_ENDIAN);
    long headerLength = Integer.toUnsignedLong(p.getInt());
    long payloadLength = p.getLong();
    if (headerLength > MAX_HEADER || payloadLength > Integer.MAX_VALUE) {
      throw new IOException("frame too large (" + headerLength + ", " + payloadLength + ")");
    }
    byte[] headerBytes = new byte[(int) headerLength];
    in.readFully(headerBytes);
    Object decoded = Msgpack.unpack(headerBytes);
    if (!(decoded instanceof List<?> header) || header.size() != 4) {
      throw new IOException("malformed frame header");
    }
    List<Object> lengths = (List<Object>) header.get(3);
    long total = 0;
    for (Object n : lengths) {
      total += ((Number) n).longValue();
    }
    if (total != payloadLength) {
      throw new IOException("malformed frame: buffer lengths do not add up to the payload");
    }
    List<byte[]> buffers = new ArrayList<>(lengths.size());
    for (Object n : lengths) {
      byte[] b = new byte[((Number) n).intValue()];
      in.readFully(b);
      buffers.add(b);
    }
    return new Frame(
        ((Number) header.get(0)).intValue(), ((Number) header.get(1)).longValue(), header.get(2), buffers);
  }
}
