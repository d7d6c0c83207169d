package io.ray.api.exception;

/** {@code Ray.get} with a timeout: the objects were not ready in time. */
public class RayTimeoutException extends RayException {
  public RayTimeoutException(String message) {
    super(message);
  }
}
