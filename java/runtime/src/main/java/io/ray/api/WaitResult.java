package io.ray.api;

import java.util.List;

/** {@link Ray#wait}'s answer: the refs that are ready and those that are not, in the given order. */
public final class WaitResult<T> {
  private final List<ObjectRef<T>> ready;
  private final List<ObjectRef<T>> unready;

  public WaitResult(List<ObjectRef<T>> ready, List<ObjectRef<T>> unready) {
    this.ready = ready;
    this.unready = unready;
  }

  public List<ObjectRef<T>> getReady() {
    return ready;
  }

  public List<ObjectRef<T>> getUnready() {
    return unready;
  }
}
