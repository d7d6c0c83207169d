// ray::Wait's answer, as Ray's: the refs that are ready and those that are
// not, each in the order given.
#pragma once

#include <ray/api/object_ref.h>

#include <list>

namespace ray {

template <typename T>
class WaitResult {
 public:
  std::list<ObjectRef<T>> ready;
  std::list<ObjectRef<T>> unready;
  WaitResult() = default;
  WaitResult(std::list<ObjectRef<T>> &&ready_refs, std::list<ObjectRef<T>> &&unready_refs)
      : ready(std::move(ready_refs)), unready(std::move(unready_refs)) {}
};

}  // namespace ray
