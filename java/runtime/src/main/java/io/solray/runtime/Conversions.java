package io.solray.runtime;

import java.lang.reflect.Array;
import java.lang.reflect.GenericArrayType;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.Type;
import java.lang.reflect.WildcardType;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Decoded cross-language values (Msgpack) to the Java type a caller wants: a
 * method's parameter in the JVM executor, the return type of a task or
 * PyFunction in a driver. Strict mode is the spec's rule (ints to integral
 * types, floats to float types, lists to List or arrays, maps to Map); lenient
 * also lets an int become a double or float, tried only when no overload
 * matches strictly.
 */
public final class Conversions {
  /** Returned when the value cannot become the type. */
  public static final Object NO_MATCH = new Object();

  private Conversions() {}

  public static Object convert(Object v, Type target, boolean lenient) {
    if (target instanceof WildcardType w) {
      target = w.getUpperBounds()[0];
    }
    if (target instanceof ParameterizedType pt) {
      return convertGeneric(v, (Class<?>) pt.getRawType(), pt.getActualTypeArguments(), lenient);
    }
    if (target instanceof GenericArrayType ga) {
      return toArray(v, ga.getGenericComponentType(), rawClass(ga.getGenericComponentType()), lenient);
    }
    if (!(target instanceof Class<?> c)) {
      return v; // a type variable: no constraint this side knows
    }
    if (v == null) {
      return c.isPrimitive() ? NO_MATCH : null;
    }
    if (c == Object.class) {
      return v;
    }
    Class<?> boxed = box(c);
    if (boxed == Integer.class || boxed == Long.class || boxed == Short.class || boxed == Byte.class) {
      return integral(v, boxed);
    }
    if (boxed == Double.class || boxed == Float.class) {
      boolean ok = v instanceof Double || v instanceof Float || (lenient && isInteger(v));
      if (!ok) {
        return NO_MATCH;
      }
      double d = ((Number) v).doubleValue();
      return boxed == Double.class ? (Object) d : (Object) (float) d;
    }
    if (boxed == Boolean.class) {
      return v instanceof Boolean ? v : NO_MATCH;
    }
    if (c == String.class || c == CharSequence.class) {
      return v instanceof String ? v : NO_MATCH;
    }
    if (boxed == Character.class) {
      return v instanceof String s && s.length() == 1 ? (Object) s.charAt(0) : NO_MATCH;
    }
    if (c == BigInteger.class) {
      return isInteger(v) ? new BigInteger(v.toString()) : NO_MATCH;
    }
    if (c.isArray()) {
      if (c.isInstance(v)) {
        return v;
      }
      return toArray(v, c.getComponentType(), c.getComponentType(), lenient);
    }
    if (Map.class.isAssignableFrom(c) || Collection.class.isAssignableFrom(c)) {
      return convertGeneric(v, c, null, lenient);
    }
    return c.isInstance(v) ? v : NO_MATCH;
  }

  private static Object convertGeneric(Object v, Class<?> raw, Type[] typeArgs, boolean lenient) {
    if (v == null) {
      return null;
    }
    if (List.class.isAssignableFrom(raw) || raw == Collection.class || raw == Iterable.class) {
      List<?> items = asList(v);
      if (items == null || !raw.isAssignableFrom(ArrayList.class)) {
        return NO_MATCH;
      }
      Type element = typeArgs == null ? Object.class : typeArgs[0];
      List<Object> out = new ArrayList<>(items.size());
      for (Object item : items) {
        Object c = convert(item, element, lenient);
        if (c == NO_MATCH) {
          return NO_MATCH;
        }
        out.add(c);
      }
      return out;
    }
    if (Map.class.isAssignableFrom(raw)) {
      if (!(v instanceof Map<?, ?> map) || !raw.isAssignableFrom(LinkedHashMap.class)) {
        return NO_MATCH;
      }
      Type kt = typeArgs == null ? Object.class : typeArgs[0];
      Type vt = typeArgs == null ? Object.class : typeArgs[1];
      Map<Object, Object> out = new LinkedHashMap<>();
      for (Map.Entry<?, ?> e : map.entrySet()) {
        Object k = convert(e.getKey(), kt, lenient);
        Object x = convert(e.getValue(), vt, lenient);
        if (k == NO_MATCH || x == NO_MATCH) {
          return NO_MATCH;
        }
        out.put(k, x);
      }
      return out;
    }
    return raw.isInstance(v) ? v : NO_MATCH;
  }

  /** A list or a primitive array as a list of its items; null for anything else. */
  private static List<?> asList(Object v) {
    if (v instanceof List<?> l) {
      return l;
    }
    if (v != null && v.getClass().isArray() && !(v instanceof byte[])) {
      List<Object> out = new ArrayList<>();
      for (int i = 0; i < Array.getLength(v); i++) {
        out.add(Array.get(v, i));
      }
      return out;
    }
    return null;
  }

  private static Object toArray(Object v, Type elementType, Class<?> elementClass, boolean lenient) {
    if (v instanceof byte[] && elementClass == byte.class) {
      return v;
    }
    List<?> items = asList(v);
    if (items == null) {
      return NO_MATCH;
    }
    Object out = Array.newInstance(elementClass, items.size());
    for (int i = 0; i < items.size(); i++) {
      Object c = convert(items.get(i), elementType, lenient);
      if (c == NO_MATCH || (c == null && elementClass.isPrimitive())) {
        return NO_MATCH;
      }
      Array.set(out, i, c);
    }
    return out;
  }

  private static boolean isInteger(Object v) {
    return v instanceof Integer || v instanceof Long || v instanceof Short || v instanceof Byte
        || v instanceof BigInteger;
  }

  private static Object integral(Object v, Class<?> boxed) {
    if (!isInteger(v)) {
      return NO_MATCH;
    }
    BigInteger b = v instanceof BigInteger big ? big : BigInteger.valueOf(((Number) v).longValue());
    int bits = boxed == Long.class ? 64 : boxed == Integer.class ? 32 : boxed == Short.class ? 16 : 8;
    if (b.bitLength() >= bits) {
      return NO_MATCH; // does not fit: another overload (or the error) says so
    }
    long x = b.longValue();
    if (boxed == Long.class) {
      return x;
    }
    if (boxed == Integer.class) {
      return (int) x;
    }
    return boxed == Short.class ? (Object) (short) x : (Object) (byte) x;
  }

  static Class<?> rawClass(Type t) {
    if (t instanceof Class<?> c) {
      return c;
    }
    if (t instanceof ParameterizedType pt) {
      return (Class<?>) pt.getRawType();
    }
    if (t instanceof GenericArrayType ga) {
      return Array.newInstance(rawClass(ga.getGenericComponentType()), 0).getClass();
    }
    return Object.class;
  }

  static Class<?> box(Class<?> c) {
    if (!c.isPrimitive()) {
      return c;
    }
    if (c == int.class) {
      return Integer.class;
    }
    if (c == long.class) {
      return Long.class;
    }
    if (c == double.class) {
      return Double.class;
    }
    if (c == float.class) {
      return Float.class;
    }
    if (c == boolean.class) {
      return Boolean.class;
    }
    if (c == short.class) {
      return Short.class;
    }
    if (c == byte.class) {
      return Byte.class;
    }
    if (c == char.class) {
      return Character.class;
    }
    return Void.class;
  }

  /** Java's name for a decoded value's type, for "no overload takes (...)" errors. */
  static String describe(Object v) {
    return v == null ? "null" : v.getClass().getSimpleName();
  }
}
