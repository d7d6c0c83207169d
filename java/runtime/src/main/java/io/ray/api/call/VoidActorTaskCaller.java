package io.ray.api.call;

import io.ray.api.ActorHandle;
import io.ray.api.function.RayFuncVoid;
import io.solray.runtime.SolrayRuntime;

/** {@code handle.task(A::voidMethod, args...)}: {@link #remote()} calls the actor, no result. */
public class VoidActorTaskCaller {
  private final ActorHandle<?> actor;
  private final RayFuncVoid func;
  private final Object[] args;

  public VoidActorTaskCaller(ActorHandle<?> actor, RayFuncVoid func, Object[] args) {
    this.actor = actor;
    this.func = func;
    this.args = args;
  }

  public void remote() {
    SolrayRuntime.get().callJavaActor(actor, func, args);
  }
}
