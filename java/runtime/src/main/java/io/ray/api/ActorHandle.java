package io.ray.api;

/** A handle to a Java actor of class A: {@code handle.task(A::method, args...).remote()}. */
public interface ActorHandle<A> extends BaseActorHandle, ActorCall<A> {}
