// The C++ examples of the "Objects" page, as written there, with a main:
// connect to a running cluster (RAY_ADDRESS: its client server, HOST:PORT;
// SOLRAY_TOKEN_FILE: a copy of its token file), put, get one, get many.
#undef NDEBUG  // the page's checks are asserts: keep them in every build type
#include <ray/api.h>

#include <cassert>
#include <iostream>
#include <vector>

int main() {
  ray::Init();
  {
    // Put an object in Ray's object store.
    int y = 1;
    ray::ObjectRef<int> object_ref = ray::Put(y);
  }
  {
    // Get the value of one object ref.
    ray::ObjectRef<int> obj_ref = ray::Put(1);
    assert(*obj_ref.Get() == 1);

    // Get the values of multiple object refs in parallel.
    std::vector<ray::ObjectRef<int>> obj_refs;
    for (int i = 0; i < 3; i++) {
      obj_refs.emplace_back(ray::Put(i));
    }
    auto results = ray::Get(obj_refs);
    assert(results.size() == 3);
    assert(*results[0] == 0);
    assert(*results[1] == 1);
    assert(*results[2] == 2);
  }
  ray::Shutdown();
  std::cout << "objects example: ok" << std::endl;
  return 0;
}
