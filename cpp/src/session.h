// One connection to the cluster (from ray::Init to ray::Shutdown): frames
// (solray/_private/protocol.py), requests and their replies, and the ids
// this client holds.
//
// Threads: the caller's threads send requests and wait for their replies
// (any number at once); a reader thread owns the socket's reading side and
// hands each reply to its waiter; a release thread sends the ids whose
// last handle died, in batches (a destructor must not block on the
// network). Writes are serialized by write_mu_.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <msgpack.hpp>
#include <mutex>
#include <optional>
#include <ray/api/runtime.h>
#include <ray/api/xlang_value.h>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "connection.h"
#include "frame.h"

namespace ray {
namespace internal {

// Message types of the cross-language protocol (docs/protocol.md).
enum Msg : int {
  REPLY = 1,
  ERROR_REPLY = 2,
  XLANG_CONNECT = 210,
  XLANG_PUT = 211,
  XLANG_GET = 212,
  XLANG_WAIT = 213,
  XLANG_SUBMIT_TASK = 214,
  XLANG_CREATE_ACTOR = 215,
  XLANG_CALL_ACTOR = 216,
  XLANG_RELEASE = 217,
  XLANG_GET_ACTOR = 218,
  XLANG_KILL_ACTOR = 219,
};

// The server's ERROR_REPLY to a request: its text, "TypeName: message".
class RequestError : public RayException {
  using RayException::RayException;
};

using Reply = Frame;

class Session : public std::enable_shared_from_this<Session> {
 public:
  // Connects, authenticates, and starts the threads; Hello() next.
  Session(const Address &address, const std::string &token);
  ~Session();

  // XLANG_CONNECT: makes this client's job in the cluster.
  void Hello(const std::optional<std::string> &ray_namespace,
             const std::vector<std::string> &code_search_path);

  // Sends a request and waits for its reply; throws RequestError for an
  // ERROR_REPLY and RayException when the connection is gone.
  Reply Call(int msg_type, const BodyWriter &body, const std::vector<std::string> &buffers = {});

  // The one handle of an id the cluster gave this client (shared when the
  // client holds it already).
  HandlePtr Adopt(const std::string &id, bool is_actor);
  // From ~RemoteHandle: release its id unless a newer handle took it over.
  void Forget(const RemoteHandle *handle);

  // Disconnects (the cluster drops all this client held) and stops the
  // threads; calls waiting for replies throw RayException(reason).
  void Close(const std::string &reason);

  const std::string &Namespace() const { return namespace_; }
  const Address &address() const { return address_; }

 private:
  // A frame (FrameHead, then its buffers); request_id 0 is one-way.
  void Send(const std::string &header, const std::vector<std::string> &buffers);
  void ReadLoop();
  void ReleaseLoop();
  void FailPending(const std::string &reason);

  Address address_;
  Connection conn_;
  std::string namespace_;

  std::mutex write_mu_;

  std::atomic<uint64_t> next_request_id_{1};

  std::mutex mu_;  // guards the fields below
  std::map<uint64_t, std::promise<Reply>> pending_;
  std::optional<std::string> closed_;  // why, once closed

  std::mutex handles_mu_;
  // id (with its kind) -> the live handle: a raw pointer to tell a dying
  // handle from its successor, and a weak one to share it.
  std::unordered_map<std::string, std::pair<const RemoteHandle *, std::weak_ptr<RemoteHandle>>>
      handles_;

  std::mutex release_mu_;
  std::condition_variable release_cv_;
  std::vector<std::string> release_ids_, release_actor_ids_;
  bool stopping_ = false;

  std::thread reader_, releaser_;
};

// The session ray::Init made; throws RayException when there is none.
std::shared_ptr<Session> CurrentSession();

}  // namespace internal
}  // namespace ray
