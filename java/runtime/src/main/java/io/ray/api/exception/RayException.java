package io.ray.api.exception;

/** The base of every error the Ray API raises. */
public class RayException extends RuntimeException {
  public RayException(String message) {
    super(message);
  }

  public RayException(String message, Throwable cause) {
    super(message, cause);
  }
}
