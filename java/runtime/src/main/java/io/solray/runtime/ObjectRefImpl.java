package io.solray.runtime;

import io.ray.api.ObjectRef;
import java.lang.reflect.Type;
import java.util.HexFormat;
import java.util.List;

/** An object id this driver holds, and the Java type its value is read as. */
final class ObjectRefImpl<T> implements ObjectRef<T> {
  final SolrayRuntime runtime;
  final byte[] id;
  final Type type;

  ObjectRefImpl(SolrayRuntime runtime, byte[] id, Type type) {
    this.runtime = runtime;
    this.id = id;
    this.type = type;
  }

  @Override
  public T get() {
    return get(-1);
  }

  @Override
  public T get(long timeoutMs) {
    return runtime.get(List.<ObjectRef<T>>of(this), timeoutMs).get(0);
  }

  @Override
  public String toString() {
    return "ObjectRef(" + HexFormat.of().formatHex(id) + ")";
  }
}
