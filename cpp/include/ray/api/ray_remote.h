// C++ functions as tasks, Ray's way: RAY_REMOTE(Plus, Minus) registers them
// by name, and ray::Task(Plus).Remote(1, 2) runs Plus in the cluster.
//
// Where they run: a C++ executor process (solray_cpp_worker, src/worker_main.cc)
// that a Python worker starts on demand, as it starts a JVM for Java tasks
// (docs/protocol.md, "JVM child protocol": the same requests, over the
// child's stdin and stdout). It loads the shared libraries on the job's
// code_search_path; each library's RAY_REMOTE registrations fill that
// library's registry, which the executor finds by the extern "C" symbol
// solray_cpp_registry. The driver registers the same functions (its copy
// of the code) only to know their names.
#pragma once

#include <ray/api/object_ref.h>
#include <ray/api/xlang_function.h>
#include <ray/api/xlang_value.h>

#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ray {
namespace internal {

// Runs a registered function on encoded arguments; its encoded result.
using Invoker = std::function<std::string(const std::vector<std::string> &args)>;

class FunctionRegistry {
 public:
  // This library image's registry (each shared library has its own).
  static FunctionRegistry &Instance();
  void Register(const std::string &name, const void *address, Invoker invoke);
  const Invoker *Find(const std::string &name) const;
  // The name a function was registered under; "" if it was not.
  std::string NameOf(const void *address) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, Invoker> invokers_;
  std::map<const void *, std::string> names_;
};

template <typename R, typename... Args, size_t... I>
std::string InvokeWith(R (*f)(Args...), const std::vector<std::string> &args,
                       std::index_sequence<I...>) {
  std::tuple<std::decay_t<Args>...> values{*Decode<std::decay_t<Args>>(args[I])...};
  if constexpr (std::is_void_v<R>) {
    f(std::get<I>(values)...);
    msgpack::sbuffer nil;
    Packer(nil).pack_nil();
    return std::string(nil.data(), nil.size());
  } else {
    return Encode<std::decay_t<R>>(f(std::get<I>(values)...));
  }
}

template <typename R, typename... Args>
Invoker MakeInvoker(const std::string &name, R (*f)(Args...)) {
  return [name, f](const std::vector<std::string> &args) {
    if (args.size() != sizeof...(Args)) {
      throw RayException(name + " takes " + std::to_string(sizeof...(Args)) + " argument(s), not " +
                         std::to_string(args.size()));
    }
    return InvokeWith(f, args, std::index_sequence_for<Args...>{});
  };
}

// "Plus, &Minus" (the macro's text) -> {"Plus", "Minus"}.
std::vector<std::string> SplitNames(const std::string &text);

template <typename... F>
bool RegisterRemote(const char *text, F... functions) {
  const std::vector<std::string> names = SplitNames(text);
  if (names.size() != sizeof...(F)) throw RayException(std::string("RAY_REMOTE(") + text + ")");
  size_t i = 0;
  auto one = [&](auto function) {
    const std::string &name = names[i++];
    FunctionRegistry::Instance().Register(name, reinterpret_cast<const void *>(function),
                                          MakeInvoker(name, function));
  };
  (one(functions), ...);
  return true;
}

// Whether an argument of type A (a value, a string literal, or a ref to a
// value) can be given for a parameter of type P.
template <typename P, typename A>
constexpr bool Accepts() {
  using D = std::decay_t<A>;
  using Param = std::decay_t<P>;
  if constexpr (is_object_ref<D>::value) {
    return std::is_convertible_v<typename D::value_type, Param>;
  } else if constexpr (std::is_same_v<D, const char *> || std::is_same_v<D, char *>) {
    return std::is_convertible_v<std::string, Param>;
  } else {
    return std::is_convertible_v<D, Param>;
  }
}

// ray::Task(Plus): a C++ function, named as RAY_REMOTE registered it.
template <typename R, typename... Params>
struct Xlang<R (*)(Params...)> {
  using Return = R;
  template <typename... Args>
  static constexpr void CheckArgs() {
    static_assert(sizeof...(Args) == sizeof...(Params),
                  "Remote(...) takes as many arguments as the function has parameters");
    if constexpr (sizeof...(Args) == sizeof...(Params)) {
      static_assert((Accepts<Params, Args>() && ...),
                    "an argument of Remote(...) does not convert to its parameter's type");
    }
  }
  static Callee Of(R (*function)(Params...)) {
    std::string name = FunctionRegistry::Instance().NameOf(reinterpret_cast<const void *>(function));
    if (name.empty()) {
      throw RayException("this function is not a remote function: register it with RAY_REMOTE");
    }
    return {"cpp", "", name};
  }
};

}  // namespace internal
}  // namespace ray

#define RAY_REMOTE_CONCAT_(a, b) a##b
#define RAY_REMOTE_CONCAT(a, b) RAY_REMOTE_CONCAT_(a, b)
// Registers free functions as remote functions: RAY_REMOTE(Plus, Minus);
#define RAY_REMOTE(...)                                                              \
  static const bool RAY_REMOTE_CONCAT(ray_remote_registered_, __LINE__) =           \
      ::ray::internal::RegisterRemote(#__VA_ARGS__, __VA_ARGS__)
