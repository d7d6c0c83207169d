// solray's framing (solray/_private/protocol.py): a 12-byte prefix (header
// length u32 LE, payload length u64 LE), a msgpack header [msg_type,
// request_id, body, buffer_lengths], then the buffers. Used on the cluster
// connection (session.cc) and on the C++ executor's pipes (worker_main.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <msgpack.hpp>
#include <ray/api/xlang_value.h>
#include <string>
#include <vector>

namespace ray {
namespace internal {

struct Frame {
  int msg_type = 0;
  uint64_t request_id = 0;
  msgpack::object_handle header;  // owns body's memory
  msgpack::object body;
  std::vector<std::string> buffers;
};

using BodyWriter = std::function<void(Packer &)>;

// The prefix and header of a frame whose buffers follow.
std::string FrameHead(int msg_type, uint64_t request_id, const BodyWriter &body,
                      const std::vector<std::string> &buffers);

// Bodies: a map's value by key (nullptr when absent or not a map), and the
// pieces every message packs.
const msgpack::object *Field(const msgpack::object &map, const std::string &key);
void PackStr(Packer &pk, const std::string &text);
void PackBin(Packer &pk, const std::string &bytes);
void PackIds(Packer &pk, const std::vector<std::string> &ids);

// Reads one frame through read_exact (false: the stream ended, cleanly or
// not); throws RayException for a malformed frame.
bool ReadFrame(const std::function<bool(char *, size_t)> &read_exact, Frame &frame);

}  // namespace internal
}  // namespace ray
