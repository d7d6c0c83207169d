package io.ray.api.options;

/** An actor's lifetime: DETACHED outlives its creator (it ends when killed). */
public enum ActorLifetime {
  DETACHED,
  NON_DETACHED
}
