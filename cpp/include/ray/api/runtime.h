// The calls the API templates make into the client's session (src/): all
// of them untyped (values are already encoded, xlang_value.h), so the
// templates stay thin and the protocol lives in one place.
#pragma once

#include <ray/api/ray_exception.h>
#include <ray/api/xlang_function.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace ray {
namespace internal {

class Session;

// One id this client holds in the cluster: an object, or an actor. Every
// ObjectRef or actor handle copy shares one; when the last is gone its
// destructor tells the session, which releases the id in the cluster (in
// batches). After ray::Shutdown (the session is gone, and the cluster has
// dropped everything of this client) it does nothing.
class RemoteHandle {
 public:
  RemoteHandle(std::string id, bool is_actor, std::weak_ptr<Session> session);
  ~RemoteHandle();
  RemoteHandle(const RemoteHandle &) = delete;
  RemoteHandle &operator=(const RemoteHandle &) = delete;

  const std::string &Binary() const { return id_; }
  const std::string &Hex() const { return hex_; }
  bool IsActor() const { return is_actor_; }
  const std::weak_ptr<Session> &Owner() const { return session_; }

 private:
  std::string id_;
  std::string hex_;
  bool is_actor_;
  std::weak_ptr<Session> session_;
};
using HandlePtr = std::shared_ptr<RemoteHandle>;

// A task argument: a ref (passed by reference, resolved to its value before
// the task runs, as a top-level ref argument in Ray) or an encoded value.
struct TaskArg {
  HandlePtr ref;
  std::string value;
};

// Options, with Ray's C++ meaning: resources "CPU", "GPU" and "memory" are
// num_cpus, num_gpus and memory; the others custom resources.
struct CallOptions {
  std::string name;
  std::unordered_map<std::string, double> resources;
};

struct ActorCreationOptions {
  std::string name;
  std::optional<std::string> ray_namespace;
  std::unordered_map<std::string, double> resources;
  std::optional<int> max_restarts;
  std::optional<int> max_concurrency;
};

HandlePtr Put(std::string value);
// The values, in order; throws the first error (or RayTimeoutException).
// timeout_ms < 0: no limit.
std::vector<std::string> Get(const std::vector<HandlePtr> &refs, int timeout_ms);
// Whether each ref is ready.
std::vector<bool> Wait(const std::vector<HandlePtr> &refs, int num_objects, int timeout_ms);
HandlePtr SubmitTask(const Callee &function, const std::vector<TaskArg> &args,
                     const CallOptions &options);
HandlePtr CreateActor(const Callee &actor_class, const std::vector<TaskArg> &args,
                      const ActorCreationOptions &options);
HandlePtr CallActor(const HandlePtr &actor, const std::string &method,
                    const std::vector<TaskArg> &args);
// The named actor, or nullptr when there is none.
HandlePtr GetActor(const std::string &name, const std::optional<std::string> &ray_namespace);
void KillActor(const HandlePtr &actor, bool no_restart);

}  // namespace internal
}  // namespace ray
