package io.solray.runtime;

import io.ray.api.exception.RayException;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * A driver's connection to the cluster's client server: the token handshake
 * (transport.py's, client side), then requests answered by request id. Any
 * thread may send (frames are written whole under a lock); one reader thread
 * completes the waiting requests. A lost connection fails every waiting and
 * later request with a RayException saying so.
 */
final class ClientConnection implements Closeable {
  static final byte[] MAGIC = "SOLRAY02".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
  private static final int NONCE = 32;
  private static final int DIGEST = 32;
  private static final int HANDSHAKE_TIMEOUT_MS = 10_000;

  /** A reply: its body and buffers. */
  record Reply(Object body, List<byte[]> buffers) {}

  private final String address;
  private final Socket socket;
  private final OutputStream out;
  private final DataInputStream in;
  private final AtomicLong nextRequestId = new AtomicLong(1);
  private final Map<Long, CompletableFuture<Reply>> pending = new ConcurrentHashMap<>();
  private volatile String closedBecause;

  ClientConnection(String host, int port, byte[] token) {
    this.address = host + ":" + port;
    try {
      socket = new Socket();
      socket.connect(new InetSocketAddress(host, port), HANDSHAKE_TIMEOUT_MS);
      socket.setTcpNoDelay(true);
      out = new BufferedOutputStream(socket.getOutputStream(), 1 << 16);
      in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
    } catch (IOException e) {
      throw new RayException("cannot connect to the solray client server at " + address + ": " + e.getMessage()
          + " (is the cluster running? `solray start --head` prints the client server's address)", e);
    }
    try {
      socket.setSoTimeout(HANDSHAKE_TIMEOUT_MS);
      handshake(token);
      socket.setSoTimeout(0);
    } catch (IOException e) {
      closeQuietly();
      throw new RayException("handshake with " + address + " failed: " + e.getMessage(), e);
    } catch (RuntimeException e) {
      closeQuietly();
      throw e;
    }
    Thread reader = new Thread(this::readLoop, "solray-client-reader");
    reader.setDaemon(true);
    reader.start();
  }

  private void handshake(byte[] token) throws IOException {
    byte[] magic = new byte[MAGIC.length];
    try {
      in.readFully(magic);
    } catch (EOFException | SocketTimeoutException e) {
      throw new RayException(address + " closed the connection or sent nothing: it is not a solray"
          + " client server (if the cluster uses TLS: this client speaks plain TCP only)");
    }
    if (!Arrays.equals(magic, MAGIC)) {
      throw new RayException(address + " is not a solray endpoint");
    }
    byte[] theirs = new byte[18];
    in.readFully(theirs);
    byte[] serverNonce = new byte[NONCE];
    in.readFully(serverNonce);
    byte[] ours = Version.block();
    if (!Arrays.equals(theirs, ours)) {
      out.write(ours); // no proof: the server checks the version first and logs both
      out.write(new byte[DIGEST + NONCE]);
      out.flush();
      throw new RayException("Version mismatch: " + address + " runs " + Version.describe(theirs)
          + ", this Java client speaks " + Version.describe(ours)
          + ". Build the Java client from the solray version the cluster runs.");
    }
    byte[] clientNonce = new byte[NONCE];
    new SecureRandom().nextBytes(clientNonce);
    out.write(ours);
    out.write(hmac(token, "client", serverNonce));
    out.write(clientNonce);
    out.flush();
    byte[] proof = new byte[DIGEST];
    try {
      in.readFully(proof);
    } catch (EOFException e) {
      throw new RayException("the cluster at " + address + " refused this client's token: SOLRAY_TOKEN"
          + " or SOLRAY_TOKEN_FILE must hold the token of the cluster (the token file"
          + " `solray start --head` printed)");
    }
    if (!MessageDigest.isEqual(proof, hmac(token, "server", clientNonce))) {
      throw new RayException(address + " does not hold the cluster token: refusing to talk to it");
    }
  }

  private static byte[] hmac(byte[] token, String role, byte[] nonce) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(token, "HmacSHA256"));
      mac.update(role.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
      return mac.doFinal(nonce);
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is not available", e);
    }
  }

  /** Send a request and wait for its answer; an ERROR_REPLY throws RemoteError. */
  Reply request(int type, Map<String, Object> body, List<byte[]> buffers) {
    long rid = nextRequestId.getAndIncrement();
    CompletableFuture<Reply> future = new CompletableFuture<>();
    pending.put(rid, future);
    try {
      send(type, rid, body, buffers);
    } catch (RuntimeException e) {
      pending.remove(rid);
      throw e;
    }
    boolean interrupted = false;
    try {
      while (true) {
        try {
          return future.get();
        } catch (InterruptedException e) {
          interrupted = true; // the answer still comes; keep the thread's flag for its owner
        } catch (ExecutionException e) {
          if (e.getCause() instanceof RuntimeException r) {
            throw r;
          }
          throw new RayException(e.getCause().toString(), e.getCause());
        }
      }
    } finally {
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }
  }

  /** A one-way message (request id 0). */
  void sendOneWay(int type, Map<String, Object> body) {
    send(type, 0, body, List.of());
  }

  private void send(int type, long rid, Map<String, Object> body, List<byte[]> buffers) {
    String why = closedBecause;
    if (why != null) {
      throw new RayException("the connection to the cluster at " + address + " is closed: " + why);
    }
    try {
      Frames.write(out, type, rid, body, buffers);
    } catch (IOException e) {
      lost("sending failed: " + e.getMessage());
      throw new RayException("the connection to the cluster at " + address + " was lost: " + e.getMessage(), e);
    }
  }

  private void readLoop() {
    try {
      while (true) {
        Frames.Frame f = Frames.read(in);
        if (f == null) {
          lost("the cluster closed the connection");
          return;
        }
        CompletableFuture<Reply> future = pending.remove(f.requestId());
        if (future == null) {
          continue; // a message this client does not handle (e.g. worker output)
        }
        if (f.type() == Frames.ERROR_REPLY) {
          future.completeExceptionally(new RemoteError(String.valueOf(f.body())));
        } else {
          future.complete(new Reply(f.body(), f.buffers()));
        }
      }
    } catch (IOException | RuntimeException e) {
      lost(closedBecause != null ? closedBecause : "reading failed: " + e);
    }
  }

  private void lost(String why) {
    if (closedBecause == null) {
      closedBecause = why;
    }
    closeQuietly();
    RayException e = new RayException("the connection to the cluster at " + address + " was lost: " + why);
    for (Long rid : pending.keySet()) {
      CompletableFuture<Reply> f = pending.remove(rid);
      if (f != null) {
        f.completeExceptionally(e);
      }
    }
  }

  boolean isOpen() {
    return closedBecause == null;
  }

  @Override
  public void close() {
    lost("Ray.shutdown() closed it");
  }

  private void closeQuietly() {
    try {
      socket.close();
    } catch (IOException e) {
      // already closed
    }
  }

  /** The server's handler raised: body "TypeName: message". */
  static final class RemoteError extends RayException {
    RemoteError(String text) {
      super(text);
    }

    /** The Python exception's type name, e.g. "ValueError". */
    String typeName() {
      String text = getMessage();
      int colon = text.indexOf(':');
      return colon < 0 ? text : text.substring(0, colon);
    }
  }
}
