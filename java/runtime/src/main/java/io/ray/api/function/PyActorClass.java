package io.ray.api.function;

/** A Python actor class for {@code Ray.actor(pyActorClass, args...)}. */
public final class PyActorClass {
  public final String moduleName;
  public final String className;

  private PyActorClass(String moduleName, String className) {
    this.moduleName = moduleName;
    this.className = className;
  }

  public static PyActorClass of(String moduleName, String className) {
    return new PyActorClass(moduleName, className);
  }
}
