// Names of Python functions, actor classes and actor methods to call from
// C++, as Ray's C++ API spells them: ray::Task(ray::PyFunction<int>{"module",
// "function"}).Remote(...). R is the type the result is read as.
#pragma once

#include <string>

namespace ray {

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

}  // namespace ray
