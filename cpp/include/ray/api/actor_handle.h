// Actors from C++. ray::Actor(ray::PyActorClass{...}) (or JavaActorClass)
// makes an ActorCreator whose Remote(args...) gives an ActorHandleXlang;
// its Task(ray::PyActorMethod<R>{"method"}) (or JavaActorMethod)
// .Remote(args...) calls a method. ray::Actor(Counter::FactoryCreate) (a
// C++ factory registered with RAY_REMOTE) gives an ActorHandle<Counter>,
// whose Task(&Counter::Add).Remote(args...) calls a member function.
// Handle copies share one RemoteHandle: the last one gone releases the
// actor (the cluster ends it, as Python does when its last handle goes,
// unless it is named and detached).
#pragma once

#include <ray/api/object_ref.h>
#include <ray/api/ray_remote.h>
#include <ray/api/xlang_function.h>

#include <optional>
#include <string>
#include <type_traits>
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
    Xlang<M>::template CheckArgs<Args...>();
    return ObjectRef<typename Xlang<M>::Return>(CallActor(actor_, method_, WrapArgs(args...)));
  }

 private:
  HandlePtr actor_;
  std::string method_;
};

// What every handle has: the id, and Kill.
class ActorHandleBase {
 public:
  ActorHandleBase() = default;
  explicit ActorHandleBase(HandlePtr handle) : handle_(std::move(handle)) {}

  // The actor's id, in hex.
  const std::string &ID() const { return handle_ ? handle_->Hex() : EmptyId(); }

  // Ends the actor now (Ray's ray.kill); no_restart by default, as Ray's.
  void Kill() { Kill(true); }
  void Kill(bool no_restart) { KillActor(handle_, no_restart); }

  const HandlePtr &Handle() const { return handle_; }

 protected:
  HandlePtr handle_;
};

}  // namespace internal

// A Python or Java actor.
class ActorHandleXlang : public internal::ActorHandleBase {
 public:
  using ActorHandleBase::ActorHandleBase;

  template <typename R>
  internal::ActorTaskCaller<PyActorMethod<R>> Task(PyActorMethod<R> method) {
    return {handle_, std::move(method.function_name)};
  }
  template <typename R>
  internal::ActorTaskCaller<JavaActorMethod<R>> Task(JavaActorMethod<R> method) {
    return {handle_, std::move(method.function_name)};
  }
};

// A C++ actor, an instance of T in a C++ executor.
template <typename T>
class ActorHandle : public internal::ActorHandleBase {
 public:
  using ActorHandleBase::ActorHandleBase;

  template <typename M>
  internal::ActorTaskCaller<M> Task(M method) {
    static_assert(std::is_member_function_pointer_v<M>,
                  "a C++ actor's Task takes a member function: actor.Task(&Class::Method)");
    static_assert(std::is_base_of_v<typename internal::Xlang<M>::Class, T>,
                  "the member function is not the actor class's");
    return {handle_, internal::RemoteName(method, "member function")};
  }
};

namespace internal {

template <typename C>
class ActorCreator {
 public:
  explicit ActorCreator(C actor_class) : actor_class_(std::move(actor_class)) {}

  template <typename... Args>
  typename Xlang<C>::Handle Remote(const Args &...args) {
    Xlang<C>::template CheckArgs<Args...>();
    return typename Xlang<C>::Handle(
        CreateActor(Xlang<C>::Of(actor_class_), WrapArgs(args...), options_));
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
