package io.ray.api.exception;

/** The actor died (or could not be created) before or while running the call. */
public class RayActorException extends RayException {
  public RayActorException(String message) {
    super(message);
  }
}
