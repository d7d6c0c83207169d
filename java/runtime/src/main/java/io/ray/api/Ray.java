package io.ray.api;

import io.ray.api.call.PyActorCreator;
import io.ray.api.call.PyTaskCaller;
import io.ray.api.function.PyActorClass;
import io.ray.api.function.PyFunction;
import io.solray.runtime.SolrayRuntime;
import java.util.List;
import java.util.Optional;

/**
 * Ray's Java API over a solray cluster. {@link #init()} connects this JVM, as a
 * driver, to a running cluster's client server: {@code -Dray.address=HOST:PORT}
 * (or RAY_ADDRESS; the port defaults to 10001), the cluster token from
 * SOLRAY_TOKEN or SOLRAY_TOKEN_FILE. See java/README.md.
 */
public final class Ray extends RayCall {
  private Ray() {}

  /** Connect to the cluster (once: later calls do nothing until {@link #shutdown()}). */
  public static void init() {
    SolrayRuntime.init();
  }

  /** Disconnect: the cluster frees what this driver owned. */
  public static void shutdown() {
    SolrayRuntime.shutdown();
  }

  public static boolean isInitialized() {
    return SolrayRuntime.isInitialized();
  }

  /** Store a value in the cluster's object store. */
  public static <T> ObjectRef<T> put(T obj) {
    return SolrayRuntime.get().put(obj);
  }

  public static <T> T get(ObjectRef<T> objectRef) {
    return objectRef.get();
  }

  /** The value, waiting at most timeoutMs ms: else {@link io.ray.api.exception.RayTimeoutException}. */
  public static <T> T get(ObjectRef<T> objectRef, long timeoutMs) {
    return objectRef.get(timeoutMs);
  }

  /** The values of all the refs, in order (fetched in parallel). */
  public static <T> List<T> get(List<ObjectRef<T>> objectList) {
    return SolrayRuntime.get().get(objectList, -1);
  }

  public static <T> List<T> get(List<ObjectRef<T>> objectList, long timeoutMs) {
    return SolrayRuntime.get().get(objectList, timeoutMs);
  }

  /**
   * Wait until numReturns of the refs are ready or timeoutMs passes; fetchLocal
   * also waits for them to reach this driver's node.
   */
  public static <T> WaitResult<T> wait(
      List<ObjectRef<T>> waitList, int numReturns, int timeoutMs, boolean fetchLocal) {
    return SolrayRuntime.get().wait(waitList, numReturns, timeoutMs, fetchLocal);
  }

  public static <T> WaitResult<T> wait(List<ObjectRef<T>> waitList, int numReturns, int timeoutMs) {
    return wait(waitList, numReturns, timeoutMs, true);
  }

  public static <T> WaitResult<T> wait(List<ObjectRef<T>> waitList, int numReturns) {
    return wait(waitList, numReturns, Integer.MAX_VALUE);
  }

  public static <T> WaitResult<T> wait(List<ObjectRef<T>> waitList) {
    return wait(waitList, waitList.size());
  }

  /** Call a Python function: {@code Ray.task(PyFunction.of("module", "f", Integer.class), 1).remote()}. */
  public static <R> PyTaskCaller<R> task(PyFunction<R> pyFunction, Object... args) {
    return new PyTaskCaller<>(pyFunction, args);
  }

  /** Create a Python actor: {@code Ray.actor(PyActorClass.of("module", "Counter")).remote()}. */
  public static PyActorCreator actor(PyActorClass pyActorClass, Object... args) {
    return new PyActorCreator(pyActorClass, args);
  }

  /** The named actor in the job's namespace: an ActorHandle or a PyActorHandle. */
  public static <T extends BaseActorHandle> Optional<T> getActor(String name) {
    return SolrayRuntime.get().getActor(name, null);
  }

  public static <T extends BaseActorHandle> Optional<T> getActor(String name, String namespace) {
    return SolrayRuntime.get().getActor(name, namespace);
  }
}
