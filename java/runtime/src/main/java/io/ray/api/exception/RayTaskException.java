package io.ray.api.exception;

/**
 * A task or actor method raised. The message holds the remote error and its
 * traceback; the cause is the original exception where this JVM can rebuild
 * it (a Java exception class it knows), else a {@link CrossLanguageException}.
 */
public class RayTaskException extends RayException {
  public RayTaskException(String message, Throwable cause) {
    super(message, cause);
  }
}
