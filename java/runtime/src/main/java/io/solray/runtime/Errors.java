package io.solray.runtime;

import io.ray.api.exception.CrossLanguageException;
import io.ray.api.exception.RayActorException;
import io.ray.api.exception.RayException;
import io.ray.api.exception.RayTaskException;
import io.ray.api.exception.RayTimeoutException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.lang.reflect.Constructor;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The spec's error record (XLANG_SPEC.md, "Error record") both ways: from a
 * Throwable in the JVM executor, and to the Ray exception a driver throws.
 */
final class Errors {
  private Errors() {}

  /** A Java exception as an error record: type its class, traceback its stack trace. */
  static Map<String, Object> record(Throwable t) {
    Map<String, Object> r = new LinkedHashMap<>();
    r.put("type", t.getClass().getName());
    r.put("message", t.getMessage() == null ? "" : t.getMessage());
    r.put("traceback", stackTrace(t));
    r.put("cause_type", null);
    r.put("language", "java");
    return r;
  }

  /**
   * The stack trace without the executor's own frames below the user's
   * method (reflection and JavaExecutor): what the user's code did.
   */
  static String stackTrace(Throwable t) {
    StackTraceElement[] frames = t.getStackTrace();
    int keep = frames.length;
    for (int i = 0; i < frames.length; i++) {
      String c = frames[i].getClassName();
      if (c.startsWith("jdk.internal.reflect.") || c.equals("java.lang.reflect.Method")
          || c.equals("java.lang.reflect.Constructor")) {
        keep = i;
        break;
      }
    }
    StackTraceElement[] saved = frames;
    t.setStackTrace(java.util.Arrays.copyOf(frames, keep));
    StringWriter out = new StringWriter();
    t.printStackTrace(new PrintWriter(out));
    t.setStackTrace(saved);
    return out.toString();
  }

  /** The exception a driver throws for an error record from the cluster. */
  static RayException toException(Map<?, ?> record) {
    String type = String.valueOf(record.get("type"));
    String message = String.valueOf(record.get("message"));
    Object tb = record.get("traceback");
    String traceback = tb == null ? "" : tb.toString();
    Object causeType = record.get("cause_type");
    String language = String.valueOf(record.get("language"));
    String text = type + (causeType != null ? "(" + causeType + ")" : "") + ": " + message
        + (traceback.isEmpty() ? "" : "\n" + traceback);
    switch (type) {
      case "RayTaskError":
        return new RayTaskException(text, cause(language, causeType, message, traceback));
      case "RayActorError":
      case "ActorDiedError":
      case "ActorUnavailableError":
        return new RayActorException(text);
      case "GetTimeoutError":
        return new RayTimeoutException(text);
      default:
        return new RayException(text);
    }
  }

  /**
   * The original exception where this JVM has its class (a Java task's
   * java.lang.ArithmeticException, say), so that callers can catch or test it
   * as in Ray; else a CrossLanguageException carrying the type by name. Its
   * own stack trace would be this thread's, so it has none: the remote one is
   * in the message.
   */
  private static Throwable cause(String language, Object causeType, String message, String traceback) {
    String name = causeType == null ? "" : causeType.toString();
    if ("java".equals(language) && !name.isEmpty()) {
      try {
        Class<?> c = Class.forName(name, false, Thread.currentThread().getContextClassLoader());
        if (Throwable.class.isAssignableFrom(c)) {
          Constructor<?> ctor = c.getConstructor(String.class);
          Throwable t = (Throwable) ctor.newInstance(message);
          t.setStackTrace(new StackTraceElement[0]);
          return t;
        }
      } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
        // fall through: described by name
      }
    }
    CrossLanguageException e =
        new CrossLanguageException(language, name, name + ": " + message + "\n" + traceback);
    e.setStackTrace(new StackTraceElement[0]);
    return e;
  }

  /** An ERROR_REPLY ("TypeName: message") as an exception. */
  static RayException fromErrorReply(Object body) {
    return new RayException(String.valueOf(body));
  }
}
