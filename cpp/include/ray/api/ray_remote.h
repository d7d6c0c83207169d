// C++ functions and actors, Ray's way. RAY_REMOTE(Plus, Counter::FactoryCreate,
// &Counter::Add) registers by name: free functions (tasks:
// ray::Task(Plus).Remote(1, 2)), factories returning a new T* (actors:
// ray::Actor(Counter::FactoryCreate).Remote(0)) and member functions (actor
// methods: counter.Task(&Counter::Add).Remote(1)).
//
// Where they run: a C++ executor process (solray_cpp_worker, src/worker_main.cc)
// that a Python worker starts on demand, as it starts a JVM for Java code
// (docs/protocol.md, "JVM child protocol": the same requests, over the
// child's stdin and stdout). It loads the shared libraries on the job's
// code_search_path; each library's RAY_REMOTE registrations fill that
// library's registry, which the executor finds by the extern "C" symbol
// solray_cpp_registry. The driver registers the same code (its copy of it)
// only to know the names.
#pragma once

#include <ray/api/object_ref.h>
#include <ray/api/xlang_function.h>
#include <ray/api/xlang_value.h>

#include <cstring>
#include <cxxabi.h>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace ray {
namespace internal {

using EncodedArgs = std::vector<std::string>;  // encoded arguments

// What RAY_REMOTE registered under one name.
struct Registered {
  std::function<std::string(const EncodedArgs &)> call;                 // a function
  std::function<std::shared_ptr<void>(const EncodedArgs &)> create;     // a factory
  std::function<std::string(void *, const EncodedArgs &)> call_method;  // a member function
  std::string class_name;  // a factory's: the class it makes
};

class FunctionRegistry {
 public:
  // This library image's registry (each shared library has its own).
  static FunctionRegistry &Instance();
  void Register(const std::string &name, const std::string &address, Registered registered);
  const Registered *Find(const std::string &name) const;
  // The name a function (its address, AddressOf) was registered under; "" if none.
  std::string NameOf(const std::string &address) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, Registered> registered_;
  std::map<std::string, std::string> names_;
};

// A function or member function pointer's bytes: a key for it.
template <typename P>
std::string AddressOf(P pointer) {
  std::string key(sizeof(P), '\0');
  std::memcpy(&key[0], &pointer, sizeof(P));
  return key;
}

std::string Demangled(const char *name);

void CheckArity(const std::string &name, size_t expected, size_t given);

template <typename... Params, size_t... I>
std::tuple<std::decay_t<Params>...> DecodeArgs(const EncodedArgs &args, std::index_sequence<I...>) {
  return std::tuple<std::decay_t<Params>...>{*Decode<std::decay_t<Params>>(args[I])...};
}

template <typename R, typename F>
std::string EncodeResult(F &&run) {
  if constexpr (std::is_void_v<R>) {
    run();
    msgpack::sbuffer nil;
    Packer(nil).pack_nil();
    return std::string(nil.data(), nil.size());
  } else {
    return Encode<std::decay_t<R>>(run());
  }
}

template <typename R, typename... Params>
Registered Registration(const std::string &name, R (*f)(Params...)) {
  using Indexes = std::index_sequence_for<Params...>;
  Registered registered;
  if constexpr (std::is_pointer_v<R> && std::is_class_v<std::remove_pointer_t<R>>) {
    using T = std::remove_pointer_t<R>;  // a factory: the actor's instance
    registered.class_name = Demangled(typeid(T).name());
    registered.create = [name, f](const EncodedArgs &args) {
      CheckArity(name, sizeof...(Params), args.size());
      auto values = DecodeArgs<Params...>(args, Indexes{});
      T *instance = std::apply(f, values);
      return std::shared_ptr<void>(instance, [](void *p) { delete static_cast<T *>(p); });
    };
  } else {
    registered.call = [name, f](const EncodedArgs &args) {
      CheckArity(name, sizeof...(Params), args.size());
      auto values = DecodeArgs<Params...>(args, Indexes{});
      return EncodeResult<R>([&] { return std::apply(f, values); });
    };
  }
  return registered;
}

template <typename M, typename C, typename R, typename... Params>
Registered MethodRegistration(const std::string &name, M method) {
  Registered registered;
  registered.call_method = [name, method](void *instance, const EncodedArgs &args) {
    CheckArity(name, sizeof...(Params), args.size());
    auto values = DecodeArgs<Params...>(args, std::index_sequence_for<Params...>{});
    C *self = static_cast<C *>(instance);
    return EncodeResult<R>([&] {
      return std::apply([&](auto &...a) -> R { return (self->*method)(a...); }, values);
    });
  };
  return registered;
}

template <typename C, typename R, typename... Params>
Registered Registration(const std::string &name, R (C::*method)(Params...)) {
  return MethodRegistration<decltype(method), C, R, Params...>(name, method);
}

template <typename C, typename R, typename... Params>
Registered Registration(const std::string &name, R (C::*method)(Params...) const) {
  return MethodRegistration<decltype(method), C, R, Params...>(name, method);
}

// "Plus, &Counter::Add" (the macro's text) -> {"Plus", "Counter::Add"}.
std::vector<std::string> SplitNames(const std::string &text);

template <typename... F>
bool RegisterRemote(const char *text, F... functions) {
  const std::vector<std::string> names = SplitNames(text);
  if (names.size() != sizeof...(F)) throw RayException(std::string("RAY_REMOTE(") + text + ")");
  size_t i = 0;
  auto one = [&](auto function) {
    const std::string &name = names[i++];
    FunctionRegistry::Instance().Register(name, AddressOf(function),
                                          Registration(name, function));
  };
  (one(functions), ...);
  return true;
}

// The name RAY_REMOTE gave a function or member function, or an error.
template <typename P>
std::string RemoteName(P pointer, const char *what) {
  std::string name = FunctionRegistry::Instance().NameOf(AddressOf(pointer));
  if (name.empty()) {
    throw RayException(std::string("this ") + what + " is not registered: register it with "
                       "RAY_REMOTE");
  }
  return name;
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

// Calls of C++ code check their arguments at compile time, as Ray's do.
template <typename... Params>
struct CheckedArgs {
  template <typename... Given>
  static constexpr void CheckArgs() {
    static_assert(sizeof...(Given) == sizeof...(Params),
                  "Remote(...) takes as many arguments as the function has parameters");
    if constexpr (sizeof...(Given) == sizeof...(Params)) {
      static_assert((Accepts<Params, Given>() && ...),
                    "an argument of Remote(...) does not convert to its parameter's type");
    }
  }
};

}  // namespace internal

template <typename T>
class ActorHandle;

namespace internal {

// ray::Task(Plus), or ray::Actor(Counter::FactoryCreate) when it returns a
// new instance.
template <typename R, typename... Params>
struct Xlang<R (*)(Params...)> : CheckedArgs<Params...> {
  using Return = R;
  using Handle = ActorHandle<std::remove_pointer_t<R>>;  // for a factory
  static Callee Of(R (*function)(Params...)) {
    const std::string name = RemoteName(function, "function");
    if constexpr (std::is_pointer_v<R> && std::is_class_v<std::remove_pointer_t<R>>) {
      return {"cpp", FunctionRegistry::Instance().Find(name)->class_name, name};
    } else {
      return {"cpp", "", name};
    }
  }
};

// counter.Task(&Counter::Add)
template <typename C, typename R, typename... Params>
struct Xlang<R (C::*)(Params...)> : CheckedArgs<Params...> {
  using Return = R;
  using Class = C;
};

template <typename C, typename R, typename... Params>
struct Xlang<R (C::*)(Params...) const> : CheckedArgs<Params...> {
  using Return = R;
  using Class = C;
};

}  // namespace internal
}  // namespace ray

#define RAY_REMOTE_CONCAT_(a, b) a##b
#define RAY_REMOTE_CONCAT(a, b) RAY_REMOTE_CONCAT_(a, b)
// Registers remote functions, actor factories and actor methods:
// RAY_REMOTE(Plus, Counter::FactoryCreate, &Counter::Add);
#define RAY_REMOTE(...)                                                              \
  static const bool RAY_REMOTE_CONCAT(ray_remote_registered_, __LINE__) =           \
      ::ray::internal::RegisterRemote(#__VA_ARGS__, __VA_ARGS__)
