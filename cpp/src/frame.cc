#include "frame.h"

namespace ray {
namespace internal {
namespace {

constexpr size_t PREFIX_LEN = 12;
constexpr uint64_t MAX_HEADER = 64ull << 20;  // protocol.py's sanity bounds
constexpr uint64_t MAX_PAYLOAD = 64ull << 30;

void PutLE(std::string &out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; i++) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t GetLE(const char *data, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; i++) {
    value |= static_cast<uint64_t>(static_cast<unsigned char>(data[i])) << (8 * i);
  }
  return value;
}

}  // namespace

const msgpack::object *Field(const msgpack::object &map, const std::string &key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; i++) {
    const auto &kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR &&
        key.compare(0, std::string::npos, kv.key.via.str.ptr, kv.key.via.str.size) == 0) {
      return &kv.val;
    }
  }
  return nullptr;
}

void PackStr(Packer &pk, const std::string &text) { Codec<std::string>::Pack(pk, text); }

void PackBin(Packer &pk, const std::string &bytes) {
  pk.pack_bin(static_cast<uint32_t>(bytes.size()));
  pk.pack_bin_body(bytes.data(), static_cast<uint32_t>(bytes.size()));
}

void PackIds(Packer &pk, const std::vector<std::string> &ids) {
  pk.pack_array(static_cast<uint32_t>(ids.size()));
  for (const auto &id : ids) PackBin(pk, id);
}

std::string FrameHead(int msg_type, uint64_t request_id, const BodyWriter &body,
                      const std::vector<std::string> &buffers) {
  msgpack::sbuffer header;
  Packer pk(header);
  pk.pack_array(4);
  pk.pack_int(msg_type);
  pk.pack_uint64(request_id);
  body(pk);
  pk.pack_array(static_cast<uint32_t>(buffers.size()));
  uint64_t payload = 0;
  for (const auto &b : buffers) {
    pk.pack_uint64(b.size());
    payload += b.size();
  }
  std::string head;
  PutLE(head, header.size(), 4);
  PutLE(head, payload, 8);
  head.append(header.data(), header.size());
  return head;
}

bool ReadFrame(const std::function<bool(char *, size_t)> &read_exact, Frame &frame) {
  char prefix[PREFIX_LEN];
  if (!read_exact(prefix, PREFIX_LEN)) return false;
  const uint64_t header_len = GetLE(prefix, 4);
  const uint64_t payload_len = GetLE(prefix + 4, 8);
  if (header_len > MAX_HEADER || payload_len > MAX_PAYLOAD) {
    throw RayException("malformed frame (too large)");
  }
  std::string header(header_len, '\0'), payload(payload_len, '\0');
  if (!read_exact(&header[0], header_len) || !read_exact(&payload[0], payload_len)) return false;
  frame.header = msgpack::unpack(header.data(), header.size());  // copies what body keeps
  const msgpack::object &h = frame.header.get();
  if (h.type != msgpack::type::ARRAY || h.via.array.size != 4 ||
      h.via.array.ptr[3].type != msgpack::type::ARRAY) {
    throw RayException("malformed frame: not [msg_type, request_id, body, buffer_lengths]");
  }
  Codec<int>::Unpack(h.via.array.ptr[0], frame.msg_type);
  Codec<uint64_t>::Unpack(h.via.array.ptr[1], frame.request_id);
  frame.body = h.via.array.ptr[2];
  const msgpack::object &lengths = h.via.array.ptr[3];
  frame.buffers.clear();
  size_t pos = 0;
  for (uint32_t i = 0; i < lengths.via.array.size; i++) {
    uint64_t n = 0;
    Codec<uint64_t>::Unpack(lengths.via.array.ptr[i], n);
    if (n > payload.size() - pos) throw RayException("malformed frame: buffers exceed the payload");
    frame.buffers.push_back(payload.substr(pos, n));
    pos += n;
  }
  return true;
}

}  // namespace internal
}  // namespace ray
