// ray::ObjectRef<T>: a ref to a value in the cluster, read as T. Copies share
// one RemoteHandle (runtime.h): the last copy gone releases the object.
#pragma once

#include <ray/api/runtime.h>
#include <ray/api/xlang_value.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ray {

template <typename T>
class ObjectRef;

namespace internal {

template <typename T>
struct is_object_ref : std::false_type {};
template <typename T>
struct is_object_ref<ObjectRef<T>> : std::true_type {};

inline const std::string &EmptyId() {
  static const std::string empty;
  return empty;
}

// Task arguments: refs by reference, the rest encoded (a string literal as
// a std::string).
template <typename A>
void WrapArg(std::vector<TaskArg> &out, const A &arg) {
  using D = std::decay_t<A>;
  if constexpr (is_object_ref<D>::value) {
    if (!arg.Handle()) {
      throw RayException("an empty ObjectRef (default-constructed or moved from) passed to Remote");
    }
    out.push_back(TaskArg{arg.Handle(), {}});
  } else if constexpr (std::is_same_v<D, const char *> || std::is_same_v<D, char *>) {
    out.push_back(TaskArg{nullptr, Encode(std::string(arg))});
  } else {
    out.push_back(TaskArg{nullptr, Encode<D>(arg)});
  }
}

template <typename... Args>
std::vector<TaskArg> WrapArgs(const Args &...args) {
  std::vector<TaskArg> out;
  out.reserve(sizeof...(Args));
  (WrapArg(out, args), ...);
  return out;
}

}  // namespace internal

template <typename T>
class ObjectRef {
 public:
  using value_type = T;
  ObjectRef() = default;
  explicit ObjectRef(internal::HandlePtr handle) : handle_(std::move(handle)) {}

  // The object's id, in hex ("" for an empty ref).
  const std::string &ID() const { return handle_ ? handle_->Hex() : internal::EmptyId(); }

  // The value; blocks until it is ready. Throws the task's error, if any.
  std::shared_ptr<T> Get() const { return Get(-1); }

  // The same, but throws ray::internal::RayTimeoutException if the value is
  // not ready within timeout_ms milliseconds (negative: no limit).
  std::shared_ptr<T> Get(const int &timeout_ms) const {
    return internal::Decode<T>(internal::Get({handle_}, timeout_ms).at(0));
  }

  bool operator==(const ObjectRef &other) const { return ID() == other.ID(); }
  bool operator!=(const ObjectRef &other) const { return !(*this == other); }

  const internal::HandlePtr &Handle() const { return handle_; }

 private:
  internal::HandlePtr handle_;
};

// A ref whose value is not read (a Python function returning None): Get
// waits for it and throws its error, if any.
template <>
class ObjectRef<void> {
 public:
  using value_type = void;
  ObjectRef() = default;
  explicit ObjectRef(internal::HandlePtr handle) : handle_(std::move(handle)) {}
  const std::string &ID() const { return handle_ ? handle_->Hex() : internal::EmptyId(); }
  void Get() const { Get(-1); }
  void Get(const int &timeout_ms) const { internal::Get({handle_}, timeout_ms); }
  bool operator==(const ObjectRef &other) const { return ID() == other.ID(); }
  bool operator!=(const ObjectRef &other) const { return !(*this == other); }
  const internal::HandlePtr &Handle() const { return handle_; }

 private:
  internal::HandlePtr handle_;
};

}  // namespace ray
