package io.solray.runtime;

import java.lang.ref.Cleaner;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * Tells the cluster when this driver holds an object or actor no more, as Ray
 * Java does with phantom references: each ObjectRef and actor handle is
 * registered with a Cleaner; when the last handle to an id has been collected,
 * the id is queued, and the queue goes out as one XLANG_RELEASE a moment
 * later (a burst of dropped refs costs one message). State is guarded by this
 * object's lock; the Cleaner's and the flusher's threads only post to it.
 */
final class HandleTracker {
  private static final Cleaner CLEANER = Cleaner.create();
  private static final long FLUSH_DELAY_MS = 20;

  private final Consumer<Map<String, Object>> sendRelease;
  private final Map<String, Integer> liveHandles = new HashMap<>();
  private final List<byte[]> objects = new ArrayList<>();
  private final List<byte[]> actors = new ArrayList<>();
  private final ScheduledExecutorService flusher;
  private boolean closed;

  HandleTracker(Consumer<Map<String, Object>> sendRelease) {
    this.sendRelease = sendRelease;
    this.flusher = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread t = new Thread(r, "solray-release");
      t.setDaemon(true);
      return t;
    });
  }

  /** Count `handle` as holding `id` until it is collected. */
  void track(Object handle, byte[] id, boolean actor) {
    String key = (actor ? "a" : "o") + HexFormat.of().formatHex(id);
    synchronized (this) {
      liveHandles.merge(key, 1, Integer::sum);
    }
    CLEANER.register(handle, () -> dropped(key, id, actor));
  }

  private synchronized void dropped(String key, byte[] id, boolean actor) {
    int left = liveHandles.merge(key, -1, Integer::sum);
    if (left > 0 || closed) {
      return;
    }
    liveHandles.remove(key);
    boolean first = objects.isEmpty() && actors.isEmpty();
    (actor ? actors : objects).add(id);
    if (first) {
      flusher.schedule(this::flush, FLUSH_DELAY_MS, TimeUnit.MILLISECONDS);
    }
  }

  void flush() {
    Map<String, Object> body = new LinkedHashMap<>();
    synchronized (this) {
      if (closed || (objects.isEmpty() && actors.isEmpty())) {
        return;
      }
      body.put("ids", new ArrayList<>(objects));
      body.put("actor_ids", new ArrayList<>(actors));
      objects.clear();
      actors.clear();
    }
    try {
      sendRelease.accept(body);
    } catch (RuntimeException e) {
      // the connection is gone: the proxy frees everything this driver held
    }
  }

  /** Send what is queued, then stop: the connection closes next, which frees the rest. */
  void close() {
    flush();
    synchronized (this) {
      closed = true;
    }
    flusher.shutdownNow();
  }
}
