package io.ray.api.call;

import io.ray.api.ActorHandle;
import io.ray.api.function.RayFuncR;
import io.solray.runtime.SolrayRuntime;

/** {@code Ray.actor(A::new, args...)}: {@link #remote()} creates the actor. */
public class ActorCreator<A> extends BaseActorCreator<ActorCreator<A>> {
  private final RayFuncR<A> constructor;
  private final Object[] args;

  public ActorCreator(RayFuncR<A> constructor, Object[] args) {
    this.constructor = constructor;
    this.args = args;
  }

  public ActorHandle<A> remote() {
    return SolrayRuntime.get().createJavaActor(constructor, args, options());
  }
}
