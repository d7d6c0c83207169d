package io.solray.runtime;

import io.ray.api.function.RayFunc;
import java.lang.invoke.MethodHandleInfo;
import java.lang.invoke.MethodType;
import java.lang.invoke.SerializedLambda;
import java.lang.reflect.Method;
import java.lang.reflect.Type;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * What a method reference (MyClass::method, MyActor::new) names: its class,
 * method and generic return type, read from the SerializedLambda that every
 * serializable lambda can write itself as (as Ray does): the JVM that runs the
 * task finds the method by these names. Cached per lambda class (one per call
 * site; a lambda class of a method reference captures nothing, so its instances
 * all name the same method).
 */
record FunctionRef(String className, String methodName, int kind, Type returnType) {
  private static final Map<Class<?>, FunctionRef> CACHE = new ConcurrentHashMap<>();

  static FunctionRef of(RayFunc func) {
    return CACHE.computeIfAbsent(func.getClass(), c -> read(func));
  }

  boolean isConstructor() {
    return kind == MethodHandleInfo.REF_newInvokeSpecial;
  }

  boolean isStatic() {
    return kind == MethodHandleInfo.REF_invokeStatic;
  }

  String describe() {
    return className + (isConstructor() ? "::new" : "::" + methodName);
  }

  private static FunctionRef read(RayFunc func) {
    SerializedLambda lambda;
    try {
      Method writeReplace = func.getClass().getDeclaredMethod("writeReplace");
      writeReplace.setAccessible(true);
      lambda = (SerializedLambda) writeReplace.invoke(func);
    } catch (ReflectiveOperationException | RuntimeException e) {
      throw new IllegalArgumentException("cannot read the method reference " + func.getClass().getName()
          + ": pass a method reference such as MyClass::myMethod", e);
    }
    return fromSerialized(lambda, func.getClass().getClassLoader());
  }

  static FunctionRef fromSerialized(SerializedLambda lambda, ClassLoader loader) {
    String name = lambda.getImplMethodName();
    String className = lambda.getImplClass().replace('/', '.');
    if (name.startsWith("lambda$")) {
      throw new IllegalArgumentException("a lambda cannot run as a remote task or actor method (its"
          + " body is private to " + className + "): pass a method reference such as MyClass::myMethod");
    }
    int kind = lambda.getImplMethodKind();
    if (lambda.getCapturedArgCount() > 0) {
      throw new IllegalArgumentException("the method reference to " + className + "." + name
          + " is bound to an object (obj::method): pass an unbound one, such as MyClass::method");
    }
    Type returnType;
    try {
      Class<?> owner = Class.forName(className, false, loader);
      MethodType type = MethodType.fromMethodDescriptorString(lambda.getImplMethodSignature(), loader);
      if (kind == MethodHandleInfo.REF_newInvokeSpecial) {
        returnType = owner;
      } else {
        returnType = findMethod(owner, name, type.parameterArray()).getGenericReturnType();
      }
    } catch (ReflectiveOperationException | TypeNotPresentException e) {
      throw new IllegalArgumentException("cannot find " + className + "." + name + ": " + e, e);
    }
    if (returnType == void.class) {
      returnType = Object.class;
    }
    return new FunctionRef(className, name, kind, returnType);
  }

  private static Method findMethod(Class<?> owner, String name, Class<?>[] params)
      throws NoSuchMethodException {
    for (Class<?> c = owner; c != null; c = c.getSuperclass()) {
      try {
        return c.getDeclaredMethod(name, params);
      } catch (NoSuchMethodException e) {
        // look further up
      }
    }
    return owner.getMethod(name, params);
  }
}
