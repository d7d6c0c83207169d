package io.ray.api;

/**
 * A reference to an object in the cluster (a future of a task's result, or a
 * value put with {@link Ray#put}). The object stays in the cluster while this
 * driver holds a reference to it.
 */
public interface ObjectRef<T> {
  /** The object's value, waiting for it as long as it takes. */
  T get();

  /** The object's value, waiting at most timeoutMs ms: else RayTimeoutException. */
  T get(long timeoutMs);
}
