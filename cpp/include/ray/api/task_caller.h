// ray::Task(ray::PyFunction<R>{...}) or ray::Task(ray::JavaFunction<R>{...}):
// options, then Remote(args...).
#pragma once

#include <ray/api/object_ref.h>
#include <ray/api/xlang_function.h>

#include <string>
#include <unordered_map>
#include <utility>

namespace ray {
namespace internal {

template <typename F>
class TaskCaller {
 public:
  explicit TaskCaller(const F &function) : function_(Xlang<F>::Of(function)) {}

  template <typename... Args>
  ObjectRef<typename Xlang<F>::Return> Remote(const Args &...args) {
    Xlang<F>::template CheckArgs<Args...>();
    return ObjectRef<typename Xlang<F>::Return>(SubmitTask(function_, WrapArgs(args...), options_));
  }

  TaskCaller &SetName(std::string name) {
    options_.name = std::move(name);
    return *this;
  }
  TaskCaller &SetResources(std::unordered_map<std::string, double> resources) {
    options_.resources = std::move(resources);
    return *this;
  }
  TaskCaller &SetResource(std::string name, double value) {
    options_.resources[std::move(name)] = value;
    return *this;
  }

 private:
  Callee function_;
  CallOptions options_;
};

}  // namespace internal
}  // namespace ray
