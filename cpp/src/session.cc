#include "session.h"

#include <chrono>

namespace ray {
namespace internal {
namespace {

// Ids whose handles die within this window go in one XLANG_RELEASE.
constexpr auto RELEASE_BATCH_WINDOW = std::chrono::milliseconds(20);

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
    PackStr(pk, "language");
    PackStr(pk, "cpp");
    PackStr(pk, "namespace");
    Codec<std::optional<std::string>>::Pack(pk, ray_namespace);
    PackStr(pk, "code_search_path");
    Codec<std::vector<std::string>>::Pack(pk, code_search_path);
    PackStr(pk, "jvm_options");
    pk.pack_array(0);
  });
  if (const msgpack::object *name = Field(reply.body, "namespace")) {
    Codec<std::string>::Unpack(*name, namespace_);
  }
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
  const std::string header = FrameHead(msg_type, request_id, body, buffers);
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
  auto read_exact = [this](char *data, size_t size) { return conn_.ReadExact(data, size); };
  while (true) {
    Reply reply;
    try {
      if (!ReadFrame(read_exact, reply)) break;
    } catch (const std::exception &e) {
      reason = std::string(e.what()) + " from the cluster: disconnected";
      break;
    }
    if (reply.msg_type != REPLY && reply.msg_type != ERROR_REPLY) continue;  // none is ours
    std::promise<Reply> waiter;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = pending_.find(reply.request_id);
      if (it == pending_.end()) continue;
      waiter = std::move(it->second);
      pending_.erase(it);
    }
    if (reply.msg_type == ERROR_REPLY) {
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
    Send(FrameHead(XLANG_RELEASE, 0, [&](Packer &pk) {
      pk.pack_map(2);
      PackStr(pk, "ids");
      PackIds(pk, ids);
      PackStr(pk, "actor_ids");
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
