package io.ray.api.exception;

/**
 * An exception raised in another language (or a Java exception class this JVM
 * does not have): its type name, message and traceback as text.
 */
public class CrossLanguageException extends RayException {
  private final String language;
  private final String typeName;

  public CrossLanguageException(String language, String typeName, String message) {
    super(message);
    this.language = language;
    this.typeName = typeName;
  }

  /** "python" or "java". */
  public String getLanguage() {
    return language;
  }

  /** The original exception's class name, e.g. "ZeroDivisionError". */
  public String getTypeName() {
    return typeName;
  }
}
