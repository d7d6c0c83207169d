// The non-template parts of the value codec (include/ray/api/xlang_value.h).
#include <ray/api/xlang_value.h>

namespace ray {
namespace internal {
namespace {

size_t ItemSize(const std::string &dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"bool", 1},   {"int8", 1},   {"int16", 2},   {"int32", 4},   {"int64", 8},   {"uint8", 1},
      {"uint16", 2}, {"uint32", 4}, {"uint64", 8}, {"float32", 4}, {"float64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

[[noreturn]] void Malformed(const std::string &what) {
  throw RayException("malformed typed array from the cluster: " + what);
}

}  // namespace

bool ReferenceAll(msgpack::type::object_type, std::size_t, void *) { return true; }

TypedArray ReadTypedArray(const msgpack::object &o) {
  // Unpacked by reference: data then points into o's ext payload (which
  // outlives this), not into the zone of `parts`, which dies here.
  msgpack::object_handle parts =
      msgpack::unpack(o.via.ext.data(), o.via.ext.size, ReferenceAll);
  const msgpack::object &p = parts.get();
  if (p.type != msgpack::type::ARRAY || p.via.array.size != 3) Malformed("not [dtype, shape, data]");
  const msgpack::object &dtype = p.via.array.ptr[0];
  const msgpack::object &shape = p.via.array.ptr[1];
  const msgpack::object &data = p.via.array.ptr[2];
  if (dtype.type != msgpack::type::STR || shape.type != msgpack::type::ARRAY ||
      data.type != msgpack::type::BIN) {
    Malformed("not [str, array, bin]");
  }
  TypedArray a;
  a.dtype.assign(dtype.via.str.ptr, dtype.via.str.size);
  const size_t item = ItemSize(a.dtype);
  if (item == 0) Malformed("unknown dtype " + a.dtype);
  uint64_t count = 1;
  for (uint32_t i = 0; i < shape.via.array.size; i++) {
    if (shape.via.array.ptr[i].type != msgpack::type::POSITIVE_INTEGER) Malformed("bad shape");
    a.shape.push_back(shape.via.array.ptr[i].via.u64);
    count *= a.shape.back();
  }
  if (count * item != data.via.bin.size) Malformed("data size does not match the shape");
  a.data = data.via.bin.ptr;
  a.size = data.via.bin.size;
  return a;
}

std::string DescribeValue(const msgpack::object &o) {
  switch (o.type) {
    case msgpack::type::NIL:
      return "None";
    case msgpack::type::BOOLEAN:
      return "bool";
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER:
      return "int";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return "float";
    case msgpack::type::STR:
      return "str";
    case msgpack::type::BIN:
      return "bytes";
    case msgpack::type::ARRAY:
      return "list";
    case msgpack::type::MAP:
      return "dict";
    case msgpack::type::EXT:
      if (o.via.ext.type() == TYPED_ARRAY_EXT) {
        try {
          TypedArray a = ReadTypedArray(o);
          std::string shape;
          for (auto n : a.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(n);
          return "numpy " + a.dtype + " array of shape [" + shape + "]";
        } catch (const RayException &) {
          return "malformed numpy array";
        }
      }
      return "value of ext type " + std::to_string(o.via.ext.type());
    default:
      return "unknown value";
  }
}

void ThrowMismatch(const msgpack::object &o, const std::string &cpp_type) {
  throw RayException("cannot read a Python " + DescribeValue(o) + " as " + cpp_type);
}

}  // namespace internal
}  // namespace ray
