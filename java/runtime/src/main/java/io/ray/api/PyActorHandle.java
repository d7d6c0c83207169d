package io.ray.api;

import io.ray.api.call.PyActorTaskCaller;
import io.ray.api.function.PyActorMethod;

/** A handle to a Python actor: {@code handle.task(PyActorMethod.of("m", Integer.class), args...)}. */
public interface PyActorHandle extends BaseActorHandle {
  /** The Python module of the actor's class. */
  String getModuleName();

  /** The actor's Python class name. */
  String getClassName();

  default <R> PyActorTaskCaller<R> task(PyActorMethod<R> method, Object... args) {
    return new PyActorTaskCaller<>(this, method, args);
  }
}
