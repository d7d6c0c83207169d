#include "session.h"

#include <chrono>
#include <cstring>

namespace ray {
namespace internal {
namespace {

constexpr size_t PREFIX_LEN = 12;  // header length u32 LE, payload length u64 LE
constexpr uint64_t MAX_HEADER = 64ull << 20;
constexpr uint64_t MAX_PAYLOAD = 64ull << 30;
// Ids whose handles die within this window go in one XLANG_RELEASE.
constexpr auto RELEASE_BATCH_WINDOW = std::chrono::milliseconds(20);

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

std::string ToHex(const std::string &bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 0xf]);
  }
  return hex;
}

void PackBin(Packer &pk, const std::string &bytes) {
  pk.pack_bin(static_cast<uint32_t>(bytes.size()));
  pk.pack_bin_body(bytes.data(), static_cast<uint32_t>(bytes.size()));
}

void PackIds(Packer &pk, const std::vector<std::string> &ids) {
  pk.pack_array(static_cast<uint32_t>(ids.size()));
  for (const auto &id : ids) PackBin(pk, id);
}

}  // namespace

// ---------- RemoteHandle ----------

RemoteHandle::RemoteHandle(std::string id, bool is_actor, std::weak_ptr<Session> session)
    : id_(std::move(id)), hex_(ToHex(id_)), is_actor_(is_actor), session_(std::move(session)) {}

RemoteHandle::~RemoteHandle() {
  if (auto session = session_.lock()) session->Forget(this);
}

// ---------- Session ----------

Session::Session(const Address &address, const std::string &token)
    : address_(address), conn_(address, token) {
  reader_ = std::thread([this] { ReadLoop(); });
  releaser_ = std::thread([this] { ReleaseLoop(); });
}

Session::~Session() { Close("ray::Shutdown() was called"); }

void Session::Hello(const std::optional<std::string> &ray_namespace,
                    const std::vector<std::string> &code_search_path) {
  Reply reply = Call(XLANG_CONNECT, [&](Packer &pk) {
    pk.pack_map(4);
    Codec<std::string>::Pack(pk, "language");
    Codec<std::string>::Pack(pk, "cpp");
    Codec<std::string>::Pack(pk, "namespace");
    Codec<std::optional<std::string>>::Pack(pk, ray_namespace);
    Codec<std::string>::Pack(pk, "code_search_path");
    Codec<std::vector<std::string>>::Pack(pk, code_search_path);
    Codec<std::string>::Pack(pk, "jvm_options");
    pk.pack_array(0);
  });
  if (reply.body.type == msgpack::type::MAP) {
    for (uint32_t i = 0; i < reply.body.via.map.size; i++) {
      const auto &kv = reply.body.via.map.ptr[i];
      if (kv.key.type == msgpack::type::STR &&
          std::string(kv.key.via.str.ptr, kv.key.via.str.size) == "namespace") {
        Codec<std::string>::Unpack(kv.val, namespace_);
      }
    }
  }
}

std::string Session::Header(int msg_type, uint64_t request_id, const BodyWriter &body,
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
  std::string frame;
  PutLE(frame, header.size(), 4);
  PutLE(frame, payload, 8);
  frame.append(header.data(), header.size());
  return frame;
}

void Session::Send(const std::string &header, const std::vector<std::string> &buffers) {
  std::lock_guard<std::mutex> lock(write_mu_);
  bool ok = conn_.WriteAll(header.data(), header.size());
  for (const auto &b : buffers) ok = ok && conn_.WriteAll(b.data(), b.size());
  if (!ok) conn_.ShutDown();  // the reader sees it and fails every waiter
}

Reply Session::Call(int msg_type, const BodyWriter &body, const std::vector<std::string> &buffers) {
  const uint64_t request_id = next_request_id_++;
  // Encoded first: a body that cannot be written (a bad argument) throws
  // before anything waits for a reply.
  const std::string header = Header(msg_type, request_id, body, buffers);
  std::future<Reply> answer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) throw RayException(*closed_);
    answer = pending_[request_id].get_future();
  }
  Send(header, buffers);
  return answer.get();
}

void Session::ReadLoop() {
  std::string reason = "the connection to the cluster at " + address_.ToString() + " was lost";
  char prefix[PREFIX_LEN];
  while (conn_.ReadExact(prefix, PREFIX_LEN)) {
    const uint64_t header_len = GetLE(prefix, 4);
    const uint64_t payload_len = GetLE(prefix + 4, 8);
    if (header_len > MAX_HEADER || payload_len > MAX_PAYLOAD) {
      reason = "malformed frame from the cluster (too large): disconnected";
      break;
    }
    std::string header(header_len, '\0'), payload(payload_len, '\0');
    if (!conn_.ReadExact(&header[0], header_len) || !conn_.ReadExact(&payload[0], payload_len)) {
      break;
    }
    Reply reply;
    int msg_type = 0;
    uint64_t request_id = 0;
    try {
      reply.header = msgpack::unpack(header.data(), header.size());
      const msgpack::object &h = reply.header.get();
      if (h.type != msgpack::type::ARRAY || h.via.array.size != 4 ||
          h.via.array.ptr[3].type != msgpack::type::ARRAY) {
        throw RayException("not [msg_type, request_id, body, buffer_lengths]");
      }
      Codec<int>::Unpack(h.via.array.ptr[0], msg_type);
      Codec<uint64_t>::Unpack(h.via.array.ptr[1], request_id);
      reply.body = h.via.array.ptr[2];
      const msgpack::object &lengths = h.via.array.ptr[3];
      size_t pos = 0;
      for (uint32_t i = 0; i < lengths.via.array.size; i++) {
        uint64_t n = 0;
        Codec<uint64_t>::Unpack(lengths.via.array.ptr[i], n);
        if (n > payload.size() - pos) throw RayException("buffer lengths exceed the payload");
        reply.buffers.push_back(payload.substr(pos, n));
        pos += n;
      }
    } catch (const std::exception &e) {
      reason = std::string("malformed frame from the cluster (") + e.what() + "): disconnected";
      break;
    }
    if (msg_type != REPLY && msg_type != ERROR_REPLY) continue;  // no one-way message is ours
    std::promise<Reply> waiter;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(request_id);
      if (it == pending_.end()) continue;
      waiter = std::move(it->second);
      pending_.erase(it);
    }
    if (msg_type == ERROR_REPLY) {
      std::string text;
      try {
        Codec<std::string>::Unpack(reply.body, text);
      } catch (const std::exception &) {
        text = "RayException: " + DescribeValue(reply.body);
      }
      waiter.set_exception(std::make_exception_ptr(RequestError(text)));
    } else {
      waiter.set_value(std::move(reply));
    }
  }
  conn_.ShutDown();
  FailPending(reason);
}

void Session::FailPending(const std::string &reason) {
  std::map<uint64_t, std::promise<Reply>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) closed_ = reason;
    pending.swap(pending_);
  }
  for (auto &[id, waiter] : pending) {
    waiter.set_exception(std::make_exception_ptr(RayException(*closed_)));
  }
}

HandlePtr Session::Adopt(const std::string &id, bool is_actor) {
  std::lock_guard<std::mutex> lock(handles_mu_);
  auto &entry = handles_[(is_actor ? "a" : "o") + id];
  if (HandlePtr live = entry.second.lock()) return live;
  auto handle = std::make_shared<RemoteHandle>(id, is_actor, weak_from_this());
  entry = {handle.get(), handle};
  return handle;
}

void Session::Forget(const RemoteHandle *handle) {
  {
    std::lock_guard<std::mutex> lock(handles_mu_);
    auto it = handles_.find((handle->IsActor() ? "a" : "o") + handle->Binary());
    if (it == handles_.end() || it->second.first != handle) return;  // a successor holds it
    handles_.erase(it);
  }
  std::lock_guard<std::mutex> lock(release_mu_);
  (handle->IsActor() ? release_actor_ids_ : release_ids_).push_back(handle->Binary());
  release_cv_.notify_one();
}

void Session::ReleaseLoop() {
  std::unique_lock<std::mutex> lock(release_mu_);
  while (true) {
    release_cv_.wait(lock, [&] {
      return stopping_ || !release_ids_.empty() || !release_actor_ids_.empty();
    });
    if (stopping_) return;  // disconnecting releases everything anyway
    release_cv_.wait_for(lock, RELEASE_BATCH_WINDOW, [&] { return stopping_; });
    if (stopping_) return;
    std::vector<std::string> ids, actor_ids;
    ids.swap(release_ids_);
    actor_ids.swap(release_actor_ids_);
    lock.unlock();
    Send(Header(XLANG_RELEASE, 0, [&](Packer &pk) {
      pk.pack_map(2);
      Codec<std::string>::Pack(pk, "ids");
      PackIds(pk, ids);
      Codec<std::string>::Pack(pk, "actor_ids");
      PackIds(pk, actor_ids);
    }, {}), {});
    lock.lock();
  }
}

void Session::Close(const std::string &reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) closed_ = reason;
  }
  {
    std::lock_guard<std::mutex> lock(release_mu_);
    stopping_ = true;
    release_cv_.notify_one();
  }
  conn_.ShutDown();
  if (reader_.joinable()) reader_.join();
  if (releaser_.joinable()) releaser_.join();
}

}  // namespace internal
}  // namespace ray
