// Ray's C++ API (namespace ray) for solray: a C++ driver that connects to a
// running cluster's client server as a thin client (docs/protocol.md). The
// cluster runs everything; what this program makes (objects, actors) a
// proxy driver there owns for it until it lets go of them or disconnects.
//
// Values cross as the cross-language format (api/xlang_value.h lists the
// C++ types); functions and actors called are Python's (PyFunction,
// PyActorClass), Java's (JavaFunction, JavaActorClass) or C++ code
// registered with RAY_REMOTE (api/ray_remote.h), which runs in a C++
// executor process in the cluster.
#pragma once

#include <ray/api/actor_handle.h>
#include <ray/api/object_ref.h>
#include <ray/api/ray_config.h>
#include <ray/api/ray_exception.h>
#include <ray/api/ray_remote.h>
#include <ray/api/task_caller.h>
#include <ray/api/wait_result.h>
#include <ray/api/xlang_function.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ray {

// Connects to the cluster: the address from config.address or RAY_ADDRESS,
// the token from SOLRAY_TOKEN or SOLRAY_TOKEN_FILE. Throws RayException
// saying what is wrong (no address, no token, refused, another version).
void Init(RayConfig &config);
// The same, with Ray's command-line flags overriding config:
// --ray_address=HOST:PORT and --ray_code_search_path=DIR[:DIR...].
void Init(RayConfig &config, int argc, char **argv);
void Init();

bool IsInitialized();

// Disconnects: the cluster drops every object and actor this program held
// (named detached actors stay). Refs still alive become unusable.
void Shutdown();

// The job's namespace.
std::string GetNamespace();

template <typename T>
ObjectRef<T> Put(const T &value) {
  return ObjectRef<T>(internal::Put(internal::Encode<T>(value)));
}

template <typename T>
std::shared_ptr<T> Get(const ObjectRef<T> &ref) {
  return ref.Get();
}

// Throws ray::internal::RayTimeoutException when the value is not ready in
// timeout_ms milliseconds.
template <typename T>
std::shared_ptr<T> Get(const ObjectRef<T> &ref, const int &timeout_ms) {
  return ref.Get(timeout_ms);
}

template <typename T>
std::vector<std::shared_ptr<T>> Get(const std::vector<ObjectRef<T>> &refs,
                                    const int &timeout_ms) {
  std::vector<internal::HandlePtr> handles;
  handles.reserve(refs.size());
  for (const auto &ref : refs) handles.push_back(ref.Handle());
  std::vector<std::string> values = internal::Get(handles, timeout_ms);
  std::vector<std::shared_ptr<T>> results;
  results.reserve(values.size());
  for (const auto &value : values) results.push_back(internal::Decode<T>(value));
  return results;
}

template <typename T>
std::vector<std::shared_ptr<T>> Get(const std::vector<ObjectRef<T>> &refs) {
  return Get(refs, -1);
}

// Waits until num_objects of the refs are ready or timeout_ms passed
// (negative: no limit).
template <typename T>
WaitResult<T> Wait(const std::vector<ObjectRef<T>> &refs, int num_objects, int timeout_ms) {
  std::vector<internal::HandlePtr> handles;
  handles.reserve(refs.size());
  for (const auto &ref : refs) handles.push_back(ref.Handle());
  std::vector<bool> ready = internal::Wait(handles, num_objects, timeout_ms);
  WaitResult<T> result;
  for (size_t i = 0; i < refs.size(); i++) {
    (ready[i] ? result.ready : result.unready).push_back(refs[i]);
  }
  return result;
}

template <typename R>
internal::TaskCaller<PyFunction<R>> Task(PyFunction<R> function) {
  return internal::TaskCaller<PyFunction<R>>(function);
}

// A C++ function registered with RAY_REMOTE, run in a C++ executor process
// of the cluster (the job's code_search_path holds the shared library with
// it and solray_cpp_worker).
template <typename R, typename... Args>
internal::TaskCaller<R (*)(Args...)> Task(R (*function)(Args...)) {
  return internal::TaskCaller<R (*)(Args...)>(function);
}

// A Java public static method (the job's code_search_path must hold its
// classes and solray's Java runtime jar).
template <typename R>
internal::TaskCaller<JavaFunction<R>> Task(JavaFunction<R> function) {
  return internal::TaskCaller<JavaFunction<R>>(function);
}

inline internal::ActorCreator<PyActorClass> Actor(PyActorClass actor_class) {
  return internal::ActorCreator<PyActorClass>(std::move(actor_class));
}

inline internal::ActorCreator<JavaActorClass> Actor(JavaActorClass actor_class) {
  return internal::ActorCreator<JavaActorClass>(std::move(actor_class));
}

// A C++ actor: its factory (registered with RAY_REMOTE) returns a new T.
template <typename T, typename... Params>
internal::ActorCreator<T *(*)(Params...)> Actor(T *(*factory)(Params...)) {
  return internal::ActorCreator<T *(*)(Params...)>(factory);
}

// The named C++ actor (made with a factory returning T*), or an empty optional.
template <typename T>
std::optional<ActorHandle<T>> GetActor(const std::string &name,
                                       const std::string &ray_namespace = "") {
  internal::HandlePtr handle = internal::GetActor(
      name, ray_namespace.empty() ? std::nullopt : std::optional<std::string>(ray_namespace));
  if (!handle) return std::nullopt;
  return ActorHandle<T>(std::move(handle));
}

// The named actor (in this job's namespace, or the one given), or an empty
// optional when there is none.
inline std::optional<ActorHandleXlang> GetActor(const std::string &name,
                                                const std::string &ray_namespace = "") {
  internal::HandlePtr handle = internal::GetActor(
      name, ray_namespace.empty() ? std::nullopt : std::optional<std::string>(ray_namespace));
  if (!handle) return std::nullopt;
  return ActorHandleXlang(std::move(handle));
}

}  // namespace ray
