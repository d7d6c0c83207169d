package io.solray.runtime;

import io.ray.api.ObjectRef;
import java.io.IOException;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.msgpack.core.MessageBufferPacker;
import org.msgpack.core.MessagePack;
import org.msgpack.core.MessagePacker;
import org.msgpack.core.MessageUnpacker;
import org.msgpack.value.ArrayValue;
import org.msgpack.value.ExtensionValue;
import org.msgpack.value.IntegerValue;
import org.msgpack.value.Value;

/**
 * The cross-language value format (XLANG_SPEC.md, "Cross-language values"),
 * which is also what frame headers are made of: one codec for both.
 *
 * <p>Decoding gives plain Java values (Integer where an int fits, else Long or
 * BigInteger; Double; String; byte[]; ArrayList; LinkedHashMap; a primitive
 * array for a 1-D typed array); {@link Conversions} turns them into the type a
 * caller asked for.
 */
public final class Msgpack {
  /** ext type of a typed array (numpy.ndarray in Python). */
  static final byte TYPED_ARRAY = 1;

  private Msgpack() {}

  /** One value as a msgpack document. */
  public static byte[] pack(Object value) {
    try (MessageBufferPacker packer = MessagePack.newDefaultBufferPacker()) {
      write(packer, value);
      packer.flush();
      return packer.toByteArray();
    } catch (IOException e) {
      throw new IllegalStateException("msgpack encoding to memory failed", e);
    }
  }

  /** The value a msgpack document holds. */
  public static Object unpack(byte[] data) {
    try (MessageUnpacker unpacker = MessagePack.newDefaultUnpacker(data)) {
      return read(unpacker.unpackValue());
    } catch (IOException e) {
      throw new IllegalArgumentException("malformed cross-language value: " + e.getMessage(), e);
    }
  }

  static void write(MessagePacker p, Object v) throws IOException {
    if (v == null) {
      p.packNil();
    } else if (v instanceof Boolean b) {
      p.packBoolean(b);
    } else if (v instanceof Integer || v instanceof Long || v instanceof Short || v instanceof Byte) {
      p.packLong(((Number) v).longValue());
    } else if (v instanceof BigInteger b) {
      if (b.bitLength() > 64 || (b.signum() < 0 && b.bitLength() > 63)) {
        throw new IllegalArgumentException(
            "the integer " + b + " has no cross-language form: integers are limited to 64 bits");
      }
      p.packBigInteger(b);
    } else if (v instanceof Double d) {
      p.packDouble(d);
    } else if (v instanceof Float f) {
      p.packFloat(f);
    } else if (v instanceof String s) {
      p.packString(s);
    } else if (v instanceof Character c) {
      p.packString(c.toString());
    } else if (v instanceof byte[] b) {
      p.packBinaryHeader(b.length);
      p.writePayload(b);
    } else if (v instanceof ObjectRef) {
      throw new IllegalArgumentException(
          "an ObjectRef inside a value is not supported across languages yet: pass it as a"
              + " top-level argument of the task instead");
    } else if (v instanceof List<?> list) {
      p.packArrayHeader(list.size());
      for (Object item : list) {
        write(p, item);
      }
    } else if (v instanceof Object[] array) {
      p.packArrayHeader(array.length);
      for (Object item : array) {
        write(p, item);
      }
    } else if (v instanceof Map<?, ?> map) {
      p.packMapHeader(map.size());
      for (Map.Entry<?, ?> e : map.entrySet()) {
        write(p, e.getKey());
        write(p, e.getValue());
      }
    } else if (v.getClass().isArray()) {
      writeTypedArray(p, v);
    } else {
      throw new IllegalArgumentException(
          "a " + v.getClass().getName() + " has no cross-language form: use null, booleans,"
              + " numbers, strings, byte[], primitive arrays, Lists and Maps of these");
    }
  }

  private static void writeTypedArray(MessagePacker p, Object array) throws IOException {
    String dtype;
    ByteBuffer data;
    if (array instanceof boolean[] a) {
      dtype = "bool";
      data = ByteBuffer.allocate(a.length);
      for (boolean x : a) {
        data.put((byte) (x ? 1 : 0));
      }
    } else if (array instanceof short[] a) {
      dtype = "int16";
      data = ByteBuffer.allocate(a.length * 2).order(ByteOrder.LITTLE_ENDIAN);
      data.asShortBuffer().put(a);
    } else if (array instanceof int[] a) {
      dtype = "int32";
      data = ByteBuffer.allocate(a.length * 4).order(ByteOrder.LITTLE_ENDIAN);
      data.asIntBuffer().put(a);
    } else if (array instanceof long[] a) {
      dtype = "int64";
      data = ByteBuffer.allocate(a.length * 8).order(ByteOrder.LITTLE_ENDIAN);
      data.asLongBuffer().put(a);
    } else if (array instanceof float[] a) {
      dtype = "float32";
      data = ByteBuffer.allocate(a.length * 4).order(ByteOrder.LITTLE_ENDIAN);
      data.asFloatBuffer().put(a);
    } else if (array instanceof double[] a) {
      dtype = "float64";
      data = ByteBuffer.allocate(a.length * 8).order(ByteOrder.LITTLE_ENDIAN);
      data.asDoubleBuffer().put(a);
    } else {
      throw new IllegalArgumentException(
          "a " + array.getClass().getComponentType() + "[] has no cross-language form");
    }
    byte[] bytes = data.array();
    try (MessageBufferPacker inner = MessagePack.newDefaultBufferPacker()) {
      inner.packArrayHeader(3);
      inner.packString(dtype);
      inner.packArrayHeader(1);
      inner.packLong(java.lang.reflect.Array.getLength(array));
      inner.packBinaryHeader(bytes.length);
      inner.writePayload(bytes);
      inner.flush();
      byte[] payload = inner.toByteArray();
      p.packExtensionTypeHeader(TYPED_ARRAY, payload.length);
      p.writePayload(payload);
    }
  }

  static Object read(Value v) {
    switch (v.getValueType()) {
      case NIL:
        return null;
      case BOOLEAN:
        return v.asBooleanValue().getBoolean();
      case INTEGER:
        IntegerValue i = v.asIntegerValue();
        if (i.isInIntRange()) {
          return i.toInt();
        }
        return i.isInLongRange() ? (Object) i.toLong() : i.toBigInteger();
      case FLOAT:
        return v.asFloatValue().toDouble();
      case STRING:
        return v.asStringValue().asString();
      case BINARY:
        return v.asBinaryValue().asByteArray();
      case ARRAY:
        List<Object> list = new ArrayList<>();
        for (Value item : v.asArrayValue()) {
          list.add(read(item));
        }
        return list;
      case MAP:
        Map<Object, Object> map = new LinkedHashMap<>();
        for (Map.Entry<Value, Value> e : v.asMapValue().entrySet()) {
          map.put(read(e.getKey()), read(e.getValue()));
        }
        return map;
      case EXTENSION:
        return readExtension(v.asExtensionValue());
      default:
        throw new IllegalArgumentException("unexpected msgpack value " + v);
    }
  }

  private static Object readExtension(ExtensionValue ext) {
    if (ext.getType() != TYPED_ARRAY) {
      throw new IllegalArgumentException(
          "msgpack extension type " + ext.getType() + " is reserved: this client does not read it");
    }
    ArrayValue parts;
    try (MessageUnpacker u = MessagePack.newDefaultUnpacker(ext.getData())) {
      parts = u.unpackValue().asArrayValue();
    } catch (IOException e) {
      throw new IllegalArgumentException("malformed typed array: " + e.getMessage(), e);
    }
    String dtype = parts.get(0).asStringValue().asString();
    ArrayValue shape = parts.get(1).asArrayValue();
    if (shape.size() != 1) {
      throw new IllegalArgumentException(
          "a typed array of shape " + shape + " has no Java form: only 1-D arrays map to Java"
              + " arrays");
    }
    ByteBuffer data =
        ByteBuffer.wrap(parts.get(2).asBinaryValue().asByteArray()).order(ByteOrder.LITTLE_ENDIAN);
    switch (dtype) {
      case "bool": {
        boolean[] out = new boolean[data.remaining()];
        for (int k = 0; k < out.length; k++) {
          out[k] = data.get() != 0;
        }
        return out;
      }
      case "int8":
      case "uint8": {
        byte[] out = new byte[data.remaining()];
        data.get(out);
        return out;
      }
      case "int16":
      case "uint16": {
        short[] out = new short[data.remaining() / 2];
        data.asShortBuffer().get(out);
        return out;
      }
      case "int32":
      case "uint32": {
        int[] out = new int[data.remaining() / 4];
        data.asIntBuffer().get(out);
        return out;
      }
      case "int64":
      case "uint64": {
        long[] out = new long[data.remaining() / 8];
        data.asLongBuffer().get(out);
        return out;
      }
      case "float32": {
        float[] out = new float[data.remaining() / 4];
        data.asFloatBuffer().get(out);
        return out;
      }
      case "float64": {
        double[] out = new double[data.remaining() / 8];
        data.asDoubleBuffer().get(out);
        return out;
      }
      default:
        throw new IllegalArgumentException("typed array of unknown dtype " + dtype);
    }
  }
}
