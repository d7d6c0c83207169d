// solray_cpp_worker LIBRARY.so...: where C++ tasks run. A Python worker
// given a C++ task starts this (solray/_private/xlang/cpp_executor.py) with
// the shared libraries of the job's code_search_path, and keeps it for its
// life, as it keeps a JVM for Java tasks: it speaks the JVM child protocol
// of docs/protocol.md over stdin and stdout, without a handshake (the pipes
// are private to the two processes).
//
// Requests are served one at a time, in order. CALL_STATIC {"name"} runs
// the function RAY_REMOTE registered under that name in one of the
// libraries; the others (C++ actors) are answered with an error. The real
// stdout carries frames only: the user's prints (stdout) go to stderr,
// which is the Python worker's log. It exits when stdin closes.
#include <cxxabi.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <ray/api/ray_remote.h>
#include <string>
#include <typeinfo>
#include <vector>

#include "frame.h"

namespace {

using ray::internal::Codec;
using ray::internal::FunctionRegistry;
using ray::internal::Invoker;
using ray::internal::Packer;
using ray::internal::PackStr;

// The child protocol's requests.
enum Request : int { CALL_STATIC = 1, NEW_ACTOR = 2, CALL_METHOD = 3, DROP_ACTOR = 4 };
constexpr int REPLY = 1;

bool ReadExact(int fd, char *data, size_t size) {
  while (size > 0) {
    ssize_t n = read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteAll(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string Demangled(const char *name) {
  int status = 0;
  char *readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string result = status == 0 && readable ? readable : name;
  std::free(readable);
  return result;
}

struct Error {
  std::string type;
  std::string message;
};

// Every registered function of the libraries, by name.
class Functions {
 public:
  void Load(const std::string &path) {
    void *library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      problems_ += std::string("\ncannot load ") + path + ": " + dlerror();
      return;
    }
    using GetRegistry = FunctionRegistry *(*)();
    auto get = reinterpret_cast<GetRegistry>(dlsym(library, "solray_cpp_registry"));
    if (get == nullptr) return;  // a library without remote functions
    FunctionRegistry *registry = get();
    for (const auto &name : registry->Names()) {
      auto [it, added] = functions_.emplace(name, Entry{registry->Find(name), path});
      if (!added && it->second.library != path) {
        problems_ += "\n" + name + " is registered in both " + it->second.library + " and " + path;
      }
    }
    libraries_ += (libraries_.empty() ? "" : ", ") + path;
  }

  const Invoker &Find(const std::string &name) const {
    auto it = functions_.find(name);
    if (it == functions_.end()) {
      throw Error{"RayFunctionNotFound",
                  "no C++ remote function " + name + " in the libraries of the job's "
                  "code_search_path (" + (libraries_.empty() ? "none" : libraries_) +
                  "): is it registered with RAY_REMOTE there?" + problems_};
    }
    return *it->second.invoke;
  }

 private:
  struct Entry {
    const Invoker *invoke;
    std::string library;
  };
  std::map<std::string, Entry> functions_;
  std::string libraries_;
  std::string problems_;  // reported with a function not found
};

std::string Answer(const ray::internal::Frame &request, const Functions &functions,
                   std::vector<std::string> &buffers) {
  Error error;
  try {
    if (request.msg_type != CALL_STATIC) {
      throw Error{"NotImplementedError", "C++ actors are not supported yet"};
    }
    std::string name;
    if (const msgpack::object *given = ray::internal::Field(request.body, "name")) {
      Codec<std::string>::Unpack(*given, name);
    }
    buffers.push_back(functions.Find(name)(request.buffers));
    return ray::internal::FrameHead(REPLY, request.request_id, [](Packer &pk) {
      pk.pack_map(1);
      PackStr(pk, "status");
      PackStr(pk, "ok");
    }, buffers);
  } catch (const Error &e) {
    error = e;
  } catch (const std::exception &e) {
    error = Error{Demangled(typeid(e).name()), e.what()};
  } catch (...) {
    error = Error{"unknown C++ exception", "a C++ remote function threw something that is not a "
                                           "std::exception"};
  }
  buffers.clear();
  return ray::internal::FrameHead(REPLY, request.request_id, [&](Packer &pk) {
    pk.pack_map(2);
    PackStr(pk, "status");
    PackStr(pk, "error");
    PackStr(pk, "error");
    pk.pack_map(5);
    PackStr(pk, "type");
    PackStr(pk, error.type);
    PackStr(pk, "message");
    PackStr(pk, error.message);
    PackStr(pk, "traceback");
    PackStr(pk, "");
    PackStr(pk, "cause_type");
    pk.pack_nil();
    PackStr(pk, "language");
    PackStr(pk, "cpp");
  }, buffers);
}

}  // namespace

int main(int argc, char **argv) {
  // Frames on the real stdout; the user's prints to stderr.
  const int frames = dup(STDOUT_FILENO);
  if (frames < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    std::perror("solray_cpp_worker: cannot set up its output");
    return 1;
  }
  Functions functions;
  for (int i = 1; i < argc; i++) functions.Load(argv[i]);
  auto read_exact = [](char *data, size_t size) { return ReadExact(STDIN_FILENO, data, size); };
  ray::internal::Frame request;
  try {
    while (ray::internal::ReadFrame(read_exact, request)) {
      std::vector<std::string> buffers;
      const std::string head = Answer(request, functions, buffers);
      bool ok = WriteAll(frames, head.data(), head.size());
      for (const auto &b : buffers) ok = ok && WriteAll(frames, b.data(), b.size());
      if (!ok) return 1;
    }
  } catch (const std::exception &e) {
    std::fprintf(stderr, "solray_cpp_worker: %s\n", e.what());
    return 1;
  }
  return 0;
}
