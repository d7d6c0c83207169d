// Names of functions, actor classes and actor methods in other languages,
// to call from C++, as Ray's C++ API spells them:
//   ray::Task(ray::PyFunction<int>{"module", "function"}).Remote(...)
//   ray::Task(ray::JavaFunction<int>{"pkg.Class", "staticMethod"}).Remote(...)
// R is the type the result is read as (void: not read).
#pragma once

#include <ray/api/ray_exception.h>

#include <string>

namespace ray {

class ActorHandleXlang;

template <typename R>
struct PyFunction {
  std::string module_name;
  std::string function_name;
};

struct PyActorClass {
  std::string module_name;
  std::string class_name;
  std::string function_name = "__init__";
};

template <typename R>
struct PyActorMethod {
  std::string function_name;
};

template <typename R>
struct JavaFunction {
  std::string class_name;
  std::string function_name;
};

struct JavaActorClass {
  std::string class_name;
  std::string module_name = "";
  std::string function_name = "<init>";
};

template <typename R>
struct JavaActorMethod {
  std::string function_name;
};

namespace internal {

// What the cluster is asked to call: FUNC / CLASS of docs/protocol.md.
struct Callee {
  std::string language;  // "python", "java" or "cpp"
  std::string module_or_class;  // the Python module, or the Java class
  std::string name;  // the function or method; for a Python actor, its class; "" for Java's
};

// For each kind of name above: the result type, what to call, and a
// compile-time check of a call's arguments where the parameters are known
// (C++ functions, ray_remote.h; other languages' are checked when called).
template <typename F>
struct Xlang;

struct UncheckedArgs {
  template <typename... Args>
  static constexpr void CheckArgs() {}
};

template <typename R>
struct Xlang<PyFunction<R>> : UncheckedArgs {
  using Return = R;
  static Callee Of(const PyFunction<R> &f) { return {"python", f.module_name, f.function_name}; }
};

template <typename R>
struct Xlang<JavaFunction<R>> : UncheckedArgs {
  using Return = R;
  static Callee Of(const JavaFunction<R> &f) { return {"java", f.class_name, f.function_name}; }
};

template <typename R>
struct Xlang<PyActorMethod<R>> : UncheckedArgs {
  using Return = R;
};

template <typename R>
struct Xlang<JavaActorMethod<R>> : UncheckedArgs {
  using Return = R;
};

// An actor class's constructor is the only way it is made here.
void CheckConstructor(const std::string &given, const char *constructor);

template <>
struct Xlang<PyActorClass> : UncheckedArgs {
  using Handle = ActorHandleXlang;
  static Callee Of(const PyActorClass &c) {
    CheckConstructor(c.function_name, "__init__");
    return {"python", c.module_name, c.class_name};
  }
};

template <>
struct Xlang<JavaActorClass> : UncheckedArgs {
  using Handle = ActorHandleXlang;
  static Callee Of(const JavaActorClass &c) {
    CheckConstructor(c.function_name, "<init>");
    if (!c.module_name.empty()) {
      throw RayException("JavaActorClass.module_name must be empty (a Java class is named by "
                         "class_name alone), not \"" + c.module_name + "\"");
    }
    return {"java", c.class_name, ""};
  }
};

}  // namespace internal
}  // namespace ray
