package io.ray.api.call;

import io.ray.api.ActorHandle;
import io.ray.api.ObjectRef;
import io.ray.api.function.RayFuncR;
import io.solray.runtime.SolrayRuntime;

/** {@code handle.task(A::method, args...)}: {@link #remote()} calls the actor. */
public class ActorTaskCaller<R> {
  private final ActorHandle<?> actor;
  private final RayFuncR<R> func;
  private final Object[] args;

  public ActorTaskCaller(ActorHandle<?> actor, RayFuncR<R> func, Object[] args) {
    this.actor = actor;
    this.func = func;
    this.args = args;
  }

  public ObjectRef<R> remote() {
    return SolrayRuntime.get().callJavaActor(actor, func, args);
  }
}
