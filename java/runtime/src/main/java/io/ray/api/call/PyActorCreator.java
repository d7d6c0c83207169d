package io.ray.api.call;

import io.ray.api.PyActorHandle;
import io.ray.api.function.PyActorClass;
import io.solray.runtime.SolrayRuntime;

/** {@code Ray.actor(PyActorClass.of(...), args...)}: {@link #remote()} creates the actor. */
public class PyActorCreator extends BaseActorCreator<PyActorCreator> {
  private final PyActorClass actorClass;
  private final Object[] args;

  public PyActorCreator(PyActorClass actorClass, Object[] args) {
    this.actorClass = actorClass;
    this.args = args;
  }

  public PyActorHandle remote() {
    return SolrayRuntime.get().createPythonActor(actorClass, args, options());
  }
}
