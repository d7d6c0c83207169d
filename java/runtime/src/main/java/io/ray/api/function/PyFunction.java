package io.ray.api.function;

/** A Python function for {@code Ray.task(pyFunction, args...)}: module, name and the Java type of its result. */
public final class PyFunction<R> {
  public final String moduleName;
  public final String functionName;
  public final Class<R> returnType;

  private PyFunction(String moduleName, String functionName, Class<R> returnType) {
    this.moduleName = moduleName;
    this.functionName = functionName;
    this.returnType = returnType;
  }

  /** A function whose result is returned as a plain Java value (Integer, Double, String, List, Map...). */
  public static PyFunction<Object> of(String moduleName, String functionName) {
    return of(moduleName, functionName, Object.class);
  }

  public static <R> PyFunction<R> of(String moduleName, String functionName, Class<R> returnType) {
    return new PyFunction<>(moduleName, functionName, returnType);
  }
}
