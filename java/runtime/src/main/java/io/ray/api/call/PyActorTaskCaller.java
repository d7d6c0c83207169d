package io.ray.api.call;

import io.ray.api.ObjectRef;
import io.ray.api.PyActorHandle;
import io.ray.api.function.PyActorMethod;
import io.solray.runtime.SolrayRuntime;

/** {@code pyHandle.task(PyActorMethod.of(...), args...)}: {@link #remote()} calls the actor. */
public class PyActorTaskCaller<R> {
  private final PyActorHandle actor;
  private final PyActorMethod<R> method;
  private final Object[] args;

  public PyActorTaskCaller(PyActorHandle actor, PyActorMethod<R> method, Object[] args) {
    this.actor = actor;
    this.method = method;
    this.args = args;
  }

  public ObjectRef<R> remote() {
    return SolrayRuntime.get().callPythonActor(actor, method, args);
  }
}
