// RAY_REMOTE's registry (include/ray/api/ray_remote.h). One per library
// image: the C++ executor asks each shared library it loads for its own
// through solray_cpp_registry.
#include <ray/api/ray_remote.h>

#include <cctype>

namespace ray {
namespace internal {

FunctionRegistry &FunctionRegistry::Instance() {
  static FunctionRegistry registry;
  return registry;
}

void FunctionRegistry::Register(const std::string &name, const void *address, Invoker invoke) {
  invokers_[name] = std::move(invoke);
  names_[address] = name;
}

const Invoker *FunctionRegistry::Find(const std::string &name) const {
  auto it = invokers_.find(name);
  return it == invokers_.end() ? nullptr : &it->second;
}

std::string FunctionRegistry::NameOf(const void *address) const {
  auto it = names_.find(address);
  return it == names_.end() ? "" : it->second;
}

std::vector<std::string> FunctionRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto &entry : invokers_) names.push_back(entry.first);
  return names;
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
