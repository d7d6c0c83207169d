// Python and Java actors from C++: ray::Actor(ray::PyActorClass{...}) (or
// JavaActorClass) makes an ActorCreator; its Remote(args...) an
// ActorHandleXlang, whose Task(ray::PyActorMethod<R>{"method"}) (or
// JavaActorMethod) .Remote(args...) calls a method.
// Handle copies share one RemoteHandle: the last one gone releases the
// actor (the cluster ends it, as Python does when its last handle goes,
// unless it is named and detached).
#pragma once

#include <ray/api/object_ref.h>
#include <ray/api/xlang_function.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace ray {
namespace internal {

template <typename M>
class ActorTaskCaller {
 public:
  ActorTaskCaller(HandlePtr actor, std::string method)
      : actor_(std::move(actor)), method_(std::move(method)) {}

  template <typename... Args>
  ObjectRef<typename Xlang<M>::Return> Remote(const Args &...args) {
    return ObjectRef<typename Xlang<M>::Return>(CallActor(actor_, method_, WrapArgs(args...)));
  }

 private:
  HandlePtr actor_;
  std::string method_;
};

}  // namespace internal

class ActorHandleXlang {
 public:
  ActorHandleXlang() = default;
  explicit ActorHandleXlang(internal::HandlePtr handle) : handle_(std::move(handle)) {}

  // The actor's id, in hex.
  const std::string &ID() const { return handle_ ? handle_->Hex() : internal::EmptyId(); }

  template <typename R>
  internal::ActorTaskCaller<PyActorMethod<R>> Task(PyActorMethod<R> method) {
    return {handle_, std::move(method.function_name)};
  }
  template <typename R>
  internal::ActorTaskCaller<JavaActorMethod<R>> Task(JavaActorMethod<R> method) {
    return {handle_, std::move(method.function_name)};
  }

  // Ends the actor now (Ray's ray.kill); no_restart by default, as Ray's.
  void Kill() { Kill(true); }
  void Kill(bool no_restart) { internal::KillActor(handle_, no_restart); }

  const internal::HandlePtr &Handle() const { return handle_; }

 private:
  internal::HandlePtr handle_;
};

namespace internal {

template <typename C>
class ActorCreator {
 public:
  explicit ActorCreator(C actor_class) : actor_class_(std::move(actor_class)) {}

  template <typename... Args>
  ActorHandleXlang Remote(const Args &...args) {
    if (actor_class_.function_name != Xlang<C>::CONSTRUCTOR) {
      throw RayException(std::string("the actor class's function_name must be \"") +
                         Xlang<C>::CONSTRUCTOR +
                         "\" (the actor is made by its class's constructor), not \"" +
                         actor_class_.function_name + "\"");
    }
    return ActorHandleXlang(CreateActor(Xlang<C>::Of(actor_class_), WrapArgs(args...), options_));
  }

  ActorCreator &SetName(std::string name) {
    options_.name = std::move(name);
    return *this;
  }
  ActorCreator &SetName(std::string name, std::string ray_namespace) {
    options_.name = std::move(name);
    options_.ray_namespace = std::move(ray_namespace);
    return *this;
  }
  ActorCreator &SetResources(std::unordered_map<std::string, double> resources) {
    options_.resources = std::move(resources);
    return *this;
  }
  ActorCreator &SetResource(std::string name, double value) {
    options_.resources[std::move(name)] = value;
    return *this;
  }
  ActorCreator &SetMaxRestarts(int max_restarts) {
    options_.max_restarts = max_restarts;
    return *this;
  }
  ActorCreator &SetMaxConcurrency(int max_concurrency) {
    options_.max_concurrency = max_concurrency;
    return *this;
  }

 private:
  C actor_class_;
  ActorCreationOptions options_;
};

}  // namespace internal
}  // namespace ray
