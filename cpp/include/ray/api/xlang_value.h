// The cross-language value format (docs/protocol.md, "Cross-language
// values"): how a C++ value becomes one msgpack document for the cluster,
// and back. Values stay in Python's form in the cluster; the proxy converts
// between that and this format, so these are the C++ types a Python value
// can be read as, and the Python types a C++ value arrives as:
//
//   bool                            <-> bool
//   integers (any width)            <-> int (range-checked when read)
//   float, double                   <-> float (an int reads as a double too)
//   std::string                     <-> str (bytes read as a std::string too)
//   std::vector<arithmetic or bool> <-> numpy.ndarray, 1-D (ext type 1; a list
//                                       of numbers reads as a vector too)
//   std::vector<other T>            <-> list (a tuple reads as a vector too)
//   std::map / std::unordered_map   <-> dict
//   std::optional<T>                <-> None or T
//
// A type outside this list fails to compile (Codec's primary template); a
// value that does not fit the type asked for throws RayException naming
// both, when read.
#pragma once

#include <ray/api/ray_exception.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace ray {
namespace internal {

using Packer = msgpack::packer<msgpack::sbuffer>;

inline constexpr int8_t TYPED_ARRAY_EXT = 1;

template <typename T>
inline constexpr bool always_false_v = false;

// For msgpack::unpack: strings, bytes and ext payloads point into the
// buffer unpacked instead of being copied (it must outlive the objects).
bool ReferenceAll(msgpack::type::object_type type, std::size_t length, void *user_data);

// How a value in the wire format reads to a user: Python's type names.
std::string DescribeValue(const msgpack::object &o);

// A typed array's parts (ext type 1): [dtype, shape, data].
struct TypedArray {
  std::string dtype;
  std::vector<uint64_t> shape;
  const char *data = nullptr;
  size_t size = 0;
};
TypedArray ReadTypedArray(const msgpack::object &o);  // o is ext type 1

[[noreturn]] void ThrowMismatch(const msgpack::object &o, const std::string &cpp_type);

template <typename T, typename Enable = void>
struct Codec {
  static_assert(always_false_v<T>,
                "this C++ type has no cross-language form: use bool, an integer, float, "
                "double, std::string, std::vector, std::map, std::unordered_map or "
                "std::optional of these (an ObjectRef inside a value is not supported)");
};

template <>
struct Codec<bool> {
  static std::string Name() { return "bool"; }
  static void Pack(Packer &pk, bool v) { v ? pk.pack_true() : pk.pack_false(); }
  static void Unpack(const msgpack::object &o, bool &out) {
    if (o.type != msgpack::type::BOOLEAN) ThrowMismatch(o, Name());
    out = o.via.boolean;
  }
};

template <typename T>
struct Codec<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  static std::string Name() {
    return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T)) +
           "_t";
  }
  static void Pack(Packer &pk, T v) {
    if constexpr (std::is_signed_v<T>) {
      pk.pack_int64(static_cast<int64_t>(v));
    } else {
      pk.pack_uint64(static_cast<uint64_t>(v));
    }
  }
  static void Unpack(const msgpack::object &o, T &out) {
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
      if (o.via.u64 > static_cast<uint64_t>(std::numeric_limits<T>::max())) OutOfRange(o);
      out = static_cast<T>(o.via.u64);
    } else if (o.type == msgpack::type::NEGATIVE_INTEGER) {
      if constexpr (std::is_unsigned_v<T>) {
        OutOfRange(o);
      } else {
        if (o.via.i64 < static_cast<int64_t>(std::numeric_limits<T>::min())) OutOfRange(o);
        out = static_cast<T>(o.via.i64);
      }
    } else {
      ThrowMismatch(o, Name());
    }
  }
  [[noreturn]] static void OutOfRange(const msgpack::object &o) {
    std::string value = o.type == msgpack::type::POSITIVE_INTEGER ? std::to_string(o.via.u64)
                                                                   : std::to_string(o.via.i64);
    throw RayException("the int " + value + " does not fit " + Name());
  }
};

template <typename T>
struct Codec<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static_assert(sizeof(T) <= sizeof(double), "long double has no cross-language form");
  static std::string Name() { return sizeof(T) == 4 ? "float" : "double"; }
  static void Pack(Packer &pk, T v) { pk.pack_double(static_cast<double>(v)); }
  static void Unpack(const msgpack::object &o, T &out) {
    switch (o.type) {
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64:
        out = static_cast<T>(o.via.f64);
        break;
      case msgpack::type::POSITIVE_INTEGER:
        out = static_cast<T>(o.via.u64);
        break;
      case msgpack::type::NEGATIVE_INTEGER:
        out = static_cast<T>(o.via.i64);
        break;
      default:
        ThrowMismatch(o, Name());
    }
  }
};

template <>
struct Codec<std::string> {
  static std::string Name() { return "std::string"; }
  static void Pack(Packer &pk, const std::string &v) {
    pk.pack_str(static_cast<uint32_t>(v.size()));
    pk.pack_str_body(v.data(), static_cast<uint32_t>(v.size()));
  }
  static void Unpack(const msgpack::object &o, std::string &out) {
    if (o.type == msgpack::type::STR) {
      out.assign(o.via.str.ptr, o.via.str.size);
    } else if (o.type == msgpack::type::BIN) {
      out.assign(o.via.bin.ptr, o.via.bin.size);
    } else {
      ThrowMismatch(o, Name());
    }
  }
};

// numpy's name for an arithmetic C++ type's elements.
template <typename T>
std::string Dtype() {
  if constexpr (std::is_same_v<T, bool>) {
    return "bool";
  } else if constexpr (std::is_floating_point_v<T>) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "long double has no cross-language form");
    return sizeof(T) == 4 ? "float32" : "float64";
  } else {
    return std::string(std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T));
  }
}

// Reads element i of a typed array's little-endian data as T: exact for
// the same type, converted (range-checked) between integer kinds, widened
// from integers to floats; floats never silently become integers.
template <typename T>
T ReadElement(const TypedArray &a, size_t i, const std::string &vector_name);

template <typename T>
struct Codec<std::vector<T>, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static std::string Name() { return "std::vector<" + Codec<T>::Name() + ">"; }
  static void Pack(Packer &pk, const std::vector<T> &v) {
    msgpack::sbuffer payload;
    Packer inner(payload);
    inner.pack_array(3);
    Codec<std::string>::Pack(inner, Dtype<T>());
    inner.pack_array(1);
    inner.pack_uint64(v.size());
    const size_t bytes = v.size() * sizeof(T);
    inner.pack_bin(static_cast<uint32_t>(bytes));
    if constexpr (std::is_same_v<T, bool>) {  // std::vector<bool> packs bits: one byte each
      std::string data(v.size(), '\0');
      for (size_t i = 0; i < v.size(); i++) data[i] = v[i] ? 1 : 0;
      inner.pack_bin_body(data.data(), static_cast<uint32_t>(data.size()));
    } else {
      static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                    "typed arrays are little-endian on the wire: add byte swapping here");
      inner.pack_bin_body(reinterpret_cast<const char *>(v.data()), static_cast<uint32_t>(bytes));
    }
    pk.pack_ext(static_cast<uint32_t>(payload.size()), TYPED_ARRAY_EXT);
    pk.pack_ext_body(payload.data(), static_cast<uint32_t>(payload.size()));
  }
  static void Unpack(const msgpack::object &o, std::vector<T> &out) {
    if (o.type == msgpack::type::ARRAY) {
      out.resize(o.via.array.size);
      for (uint32_t i = 0; i < o.via.array.size; i++) {
        T element{};
        Codec<T>::Unpack(o.via.array.ptr[i], element);
        out[i] = element;
      }
      return;
    }
    if constexpr (sizeof(T) == 1 && !std::is_same_v<T, bool>) {
      if (o.type == msgpack::type::BIN) {  // Python bytes as a vector of bytes
        out.resize(o.via.bin.size);
        std::memcpy(out.data(), o.via.bin.ptr, o.via.bin.size);
        return;
      }
    }
    if (o.type != msgpack::type::EXT || o.via.ext.type() != TYPED_ARRAY_EXT) {
      ThrowMismatch(o, Name());
    }
    TypedArray a = ReadTypedArray(o);
    if (a.shape.size() != 1) ThrowMismatch(o, Name());
    out.resize(a.shape[0]);
    for (size_t i = 0; i < a.shape[0]; i++) out[i] = ReadElement<T>(a, i, Name());
  }
};

template <typename T>
struct Codec<std::vector<T>, std::enable_if_t<!std::is_arithmetic_v<T>>> {
  static std::string Name() { return "std::vector<" + Codec<T>::Name() + ">"; }
  static void Pack(Packer &pk, const std::vector<T> &v) {
    pk.pack_array(static_cast<uint32_t>(v.size()));
    for (const auto &element : v) Codec<T>::Pack(pk, element);
  }
  static void Unpack(const msgpack::object &o, std::vector<T> &out) {
    if (o.type != msgpack::type::ARRAY) ThrowMismatch(o, Name());
    out.clear();
    out.reserve(o.via.array.size);
    for (uint32_t i = 0; i < o.via.array.size; i++) {
      T element{};
      Codec<T>::Unpack(o.via.array.ptr[i], element);
      out.push_back(std::move(element));
    }
  }
};

template <typename Map>
struct MapCodec {
  using K = typename Map::key_type;
  using V = typename Map::mapped_type;
  static void Pack(Packer &pk, const Map &m) {
    pk.pack_map(static_cast<uint32_t>(m.size()));
    for (const auto &[k, v] : m) {
      Codec<K>::Pack(pk, k);
      Codec<V>::Pack(pk, v);
    }
  }
  static void Unpack(const msgpack::object &o, Map &out, const std::string &name) {
    if (o.type != msgpack::type::MAP) ThrowMismatch(o, name);
    out.clear();
    for (uint32_t i = 0; i < o.via.map.size; i++) {
      K k{};
      V v{};
      Codec<K>::Unpack(o.via.map.ptr[i].key, k);
      Codec<V>::Unpack(o.via.map.ptr[i].val, v);
      out.emplace(std::move(k), std::move(v));
    }
  }
};

template <typename K, typename V>
struct Codec<std::map<K, V>> {
  static std::string Name() {
    return "std::map<" + Codec<K>::Name() + ", " + Codec<V>::Name() + ">";
  }
  static void Pack(Packer &pk, const std::map<K, V> &m) { MapCodec<std::map<K, V>>::Pack(pk, m); }
  static void Unpack(const msgpack::object &o, std::map<K, V> &out) {
    MapCodec<std::map<K, V>>::Unpack(o, out, Name());
  }
};

template <typename K, typename V>
struct Codec<std::unordered_map<K, V>> {
  static std::string Name() {
    return "std::unordered_map<" + Codec<K>::Name() + ", " + Codec<V>::Name() + ">";
  }
  static void Pack(Packer &pk, const std::unordered_map<K, V> &m) {
    MapCodec<std::unordered_map<K, V>>::Pack(pk, m);
  }
  static void Unpack(const msgpack::object &o, std::unordered_map<K, V> &out) {
    MapCodec<std::unordered_map<K, V>>::Unpack(o, out, Name());
  }
};

template <typename T>
struct Codec<std::optional<T>> {
  static std::string Name() { return "std::optional<" + Codec<T>::Name() + ">"; }
  static void Pack(Packer &pk, const std::optional<T> &v) {
    if (v) {
      Codec<T>::Pack(pk, *v);
    } else {
      pk.pack_nil();
    }
  }
  static void Unpack(const msgpack::object &o, std::optional<T> &out) {
    if (o.type == msgpack::type::NIL) {
      out.reset();
      return;
    }
    T value{};
    Codec<T>::Unpack(o, value);
    out = std::move(value);
  }
};

// One value as one msgpack document (a frame buffer).
template <typename T>
std::string Encode(const T &value) {
  msgpack::sbuffer buffer;
  Packer pk(buffer);
  Codec<T>::Pack(pk, value);
  return std::string(buffer.data(), buffer.size());
}

template <typename T>
std::shared_ptr<T> Decode(const std::string &buffer) {
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(buffer.data(), buffer.size(), ReferenceAll);
  } catch (const msgpack::unpack_error &e) {
    throw RayException(std::string("malformed value from the cluster: ") + e.what());
  }
  auto value = std::make_shared<T>();
  Codec<T>::Unpack(handle.get(), *value);
  return value;
}

// ---------- typed array elements ----------

template <typename Stored, typename T>
T ConvertElement(const TypedArray &a, size_t i, const std::string &vector_name) {
  Stored v;
  std::memcpy(&v, a.data + i * sizeof(Stored), sizeof(Stored));
  if constexpr (std::is_same_v<Stored, T>) {
    return v;
  } else if constexpr (std::is_same_v<T, bool> || std::is_same_v<Stored, bool>) {
    throw RayException("cannot read a numpy " + a.dtype + " array as " + vector_name);
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else if constexpr (std::is_floating_point_v<Stored>) {
    throw RayException("cannot read a numpy " + a.dtype + " array as " + vector_name +
                       " (floats are not converted to integers)");
  } else {
    bool fits = std::is_signed_v<Stored> && v < 0
                    ? std::is_signed_v<T> && static_cast<int64_t>(v) >=
                                                 static_cast<int64_t>(std::numeric_limits<T>::min())
                    : static_cast<uint64_t>(v) <=
                          static_cast<uint64_t>(std::numeric_limits<T>::max());
    if (!fits) {
      throw RayException("element " + std::to_string(i) + " of a numpy " + a.dtype +
                         " array (" + std::to_string(v) + ") does not fit " + vector_name);
    }
    return static_cast<T>(v);
  }
}

template <typename T>
T ReadElement(const TypedArray &a, size_t i, const std::string &vector_name) {
  const std::string &d = a.dtype;
  if (d == "bool") {
    bool b = a.data[i] != 0;
    if constexpr (std::is_same_v<T, bool>) return b;
    return ConvertElement<bool, T>(a, i, vector_name);
  }
  if (d == "int8") return ConvertElement<int8_t, T>(a, i, vector_name);
  if (d == "int16") return ConvertElement<int16_t, T>(a, i, vector_name);
  if (d == "int32") return ConvertElement<int32_t, T>(a, i, vector_name);
  if (d == "int64") return ConvertElement<int64_t, T>(a, i, vector_name);
  if (d == "uint8") return ConvertElement<uint8_t, T>(a, i, vector_name);
  if (d == "uint16") return ConvertElement<uint16_t, T>(a, i, vector_name);
  if (d == "uint32") return ConvertElement<uint32_t, T>(a, i, vector_name);
  if (d == "uint64") return ConvertElement<uint64_t, T>(a, i, vector_name);
  if (d == "float32") return ConvertElement<float, T>(a, i, vector_name);
  return ConvertElement<double, T>(a, i, vector_name);  // ReadTypedArray checked the dtype
}

}  // namespace internal
}  // namespace ray
