package io.ray.api.function;

/** A method of a Python actor, and the Java type of its result. */
public final class PyActorMethod<R> {
  public final String methodName;
  public final Class<R> returnType;

  private PyActorMethod(String methodName, Class<R> returnType) {
    this.methodName = methodName;
    this.returnType = returnType;
  }

  public static PyActorMethod<Object> of(String methodName) {
    return of(methodName, Object.class);
  }

  public static <R> PyActorMethod<R> of(String methodName, Class<R> returnType) {
    return new PyActorMethod<>(methodName, returnType);
  }
}
