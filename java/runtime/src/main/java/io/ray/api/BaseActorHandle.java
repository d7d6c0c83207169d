package io.ray.api;

/** A handle to an actor of any language. */
public interface BaseActorHandle {
  /** Kill the actor at once, without restarting it. */
  default void kill() {
    kill(true);
  }

  /** Kill the actor at once; noRestart false lets it restart if it has restarts left. */
  void kill(boolean noRestart);
}
