// RAY_REMOTE's registry (include/ray/api/ray_remote.h). One per library
// image: the C++ executor asks each shared library it loads for its own
// through solray_cpp_registry.
#include <ray/api/ray_remote.h>

#include <cctype>
#include <cstdlib>

namespace ray {
namespace internal {

FunctionRegistry &FunctionRegistry::Instance() {
  static FunctionRegistry registry;
  return registry;
}

void FunctionRegistry::Register(const std::string &name, const std::string &address,
                                Registered registered) {
  registered_[name] = std::move(registered);
  names_[address] = name;
}

const Registered *FunctionRegistry::Find(const std::string &name) const {
  auto it = registered_.find(name);
  return it == registered_.end() ? nullptr : &it->second;
}

std::string FunctionRegistry::NameOf(const std::string &address) const {
  auto it = names_.find(address);
  return it == names_.end() ? "" : it->second;
}

std::vector<std::string> FunctionRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto &entry : registered_) names.push_back(entry.first);
  return names;
}

std::string Demangled(const char *name) {
  int status = 0;
  char *readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && readable != nullptr ? readable : name;
  std::free(readable);
  return result;
}

void CheckConstructor(const std::string &given, const char *constructor) {
  if (given != constructor) {
    throw RayException(std::string("the actor class's function_name must be \"") + constructor +
                       "\" (the actor is made by its class's constructor), not \"" + given +
                       "\"");
  }
}

void CheckArity(const std::string &name, size_t expected, size_t given) {
  if (given != expected) {
    throw RayException(name + " takes " + std::to_string(expected) + " argument(s), not " +
                       std::to_string(given));
  }
}

std::vector<std::string> SplitNames(const std::string &text) {
  std::vector<std::string> names(1);
  for (char c : text) {
    if (c == ',') {
      names.emplace_back();
    } else if (!std::isspace(static_cast<unsigned char>(c)) && c != '&') {
      names.back().push_back(c);
    }
  }
  return names;
}

}  // namespace internal
}  // namespace ray

extern "C" ray::internal::FunctionRegistry *solray_cpp_registry() {
  return &ray::internal::FunctionRegistry::Instance();
}
