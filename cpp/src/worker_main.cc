// solray_cpp_worker LIBRARY.so...: where C++ tasks run. A Python worker
// given a C++ task starts this (solray/_private/xlang/cpp_executor.py) with
// the shared libraries of the job's code_search_path, and keeps it for its
// life, as it keeps a JVM for Java tasks: it speaks the JVM child protocol
// of docs/protocol.md over stdin and stdout, without a handshake (the pipes
// are private to the two processes).
//
// Requests are served one at a time, in order: CALL_STATIC {"name"} runs
// the function RAY_REMOTE registered under that name in one of the
// libraries, NEW_ACTOR {"class_name": a factory's name} makes an instance
// (answering its id), CALL_METHOD {"instance", "name"} runs a registered
// member function on it, DROP_ACTOR {"instance"} deletes it. The real
// stdout carries frames only: the user's prints (stdout) go to stderr,
// which is the Python worker's log. It exits when stdin closes.
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
using ray::internal::Registered;
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

struct Error {
  std::string type;
  std::string message;
};

// Everything the libraries registered, by name.
class Remotes {
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
      auto [it, added] = remotes_.emplace(name, Entry{registry->Find(name), path});
      if (!added && it->second.library != path) {
        problems_ += "\n" + name + " is registered in both " + it->second.library + " and " + path;
      }
    }
    libraries_ += (libraries_.empty() ? "" : ", ") + path;
  }

  // `what` the name must be: a member of Registered that is set.
  template <typename Member>
  const Registered &Find(const std::string &name, Member Registered::*what,
                         const char *kind) const {
    auto it = remotes_.find(name);
    if (it == remotes_.end() || !(it->second.registered->*what)) {
      throw Error{"RayFunctionNotFound",
                  "no C++ remote " + std::string(kind) + " " + name +
                      " in the libraries of the job's code_search_path (" +
                      (libraries_.empty() ? "none" : libraries_) +
                      "): is it registered with RAY_REMOTE there?" + problems_};
    }
    return *it->second.registered;
  }

 private:
  struct Entry {
    const Registered *registered;
    std::string library;
  };
  std::map<std::string, Entry> remotes_;
  std::string libraries_;
  std::string problems_;  // reported with a name not found
};

std::string Text(const ray::internal::Frame &request, const std::string &key) {
  std::string text;
  if (const msgpack::object *given = ray::internal::Field(request.body, key)) {
    Codec<std::string>::Unpack(*given, text);
  }
  return text;
}

// The actors' instances, by the id NEW_ACTOR answered with.
class Instances {
 public:
  int64_t Add(std::shared_ptr<void> instance) {
    instances_[next_] = std::move(instance);
    return next_++;
  }
  void *Get(const ray::internal::Frame &request) const {
    auto it = instances_.find(Id(request));
    if (it == instances_.end()) {
      throw Error{"ValueError", "no C++ actor instance " + std::to_string(Id(request))};
    }
    return it->second.get();
  }
  void Drop(const ray::internal::Frame &request) { instances_.erase(Id(request)); }

 private:
  static int64_t Id(const ray::internal::Frame &request) {
    int64_t id = 0;
    if (const msgpack::object *given = ray::internal::Field(request.body, "instance")) {
      Codec<int64_t>::Unpack(*given, id);
    }
    return id;
  }
  std::map<int64_t, std::shared_ptr<void>> instances_;
  int64_t next_ = 1;
};

std::string Nil() { return ray::internal::Encode(std::optional<int>()); }

// The value a request answers with; throws for an error record.
std::string Run(const ray::internal::Frame &request, const Remotes &remotes,
                Instances &instances) {
  switch (request.msg_type) {
    case CALL_STATIC: {
      const std::string name = Text(request, "name");
      return remotes.Find(name, &Registered::call, "function").call(request.buffers);
    }
    case NEW_ACTOR: {
      const std::string name = Text(request, "class_name");
      const Registered &factory = remotes.Find(name, &Registered::create, "actor factory");
      return ray::internal::Encode(instances.Add(factory.create(request.buffers)));
    }
    case CALL_METHOD: {
      const std::string name = Text(request, "name");
      const Registered &method = remotes.Find(name, &Registered::call_method, "member function");
      return method.call_method(instances.Get(request), request.buffers);
    }
    case DROP_ACTOR:
      instances.Drop(request);
      return Nil();
    default:
      throw Error{"ValueError", "unknown request " + std::to_string(request.msg_type)};
  }
}

std::string Answer(const ray::internal::Frame &request, const Remotes &remotes,
                   Instances &instances, std::vector<std::string> &buffers) {
  Error error;
  try {
    buffers.push_back(Run(request, remotes, instances));
    return ray::internal::FrameHead(REPLY, request.request_id, [](Packer &pk) {
      pk.pack_map(1);
      PackStr(pk, "status");
      PackStr(pk, "ok");
    }, buffers);
  } catch (const Error &e) {
    error = e;
  } catch (const std::exception &e) {
    error = Error{ray::internal::Demangled(typeid(e).name()), e.what()};
  } catch (...) {
    error = Error{"unknown C++ exception", "C++ remote code threw something that is not a "
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
  Remotes remotes;
  for (int i = 1; i < argc; i++) remotes.Load(argv[i]);
  Instances instances;
  auto read_exact = [](char *data, size_t size) { return ReadExact(STDIN_FILENO, data, size); };
  ray::internal::Frame request;
  try {
    while (ray::internal::ReadFrame(read_exact, request)) {
      std::vector<std::string> buffers;
      const std::string head = Answer(request, remotes, instances, buffers);
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
