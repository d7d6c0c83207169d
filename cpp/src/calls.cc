// The API's calls as protocol messages (docs/protocol.md, "Messages"): each
// builds its body, sends it through the session and reads the reply.
#include <ray/api/runtime.h>

#include <unordered_set>

#include "session.h"

namespace ray {
namespace internal {
namespace {

[[noreturn]] void Malformed(const std::string &what) {
  throw RayException("malformed reply from the cluster: " + what);
}

const msgpack::object &Require(const msgpack::object &map, const std::string &key) {
  const msgpack::object *value = Field(map, key);
  if (value == nullptr) Malformed("no \"" + key + "\" in " + DescribeValue(map));
  return *value;
}

std::string Bin(const msgpack::object &o) {
  if (o.type != msgpack::type::BIN) Malformed("an id is a " + DescribeValue(o));
  return std::string(o.via.bin.ptr, o.via.bin.size);
}

std::string Str(const msgpack::object *o) {
  std::string text;
  if (o != nullptr && o->type == msgpack::type::STR) text.assign(o->via.str.ptr, o->via.str.size);
  return text;
}

// The session a handle belongs to must be this one: refs outlive ray::Shutdown.
const std::string &Checked(const HandlePtr &handle, const std::shared_ptr<Session> &session,
                           const char *what) {
  if (!handle) {
    throw RayException(std::string("an empty ") + what +
                       " (default-constructed or moved from) was used");
  }
  if (handle->Owner().lock() != session) {
    throw RayException(std::string("this ") + what + " (" + handle->Hex() +
                       ") belongs to an earlier connection: ray::Shutdown() was called since");
  }
  return handle->Binary();
}

// "args": [ARG]; the values are the frame's buffers (ValueBuffers), in order.
void PackArgs(Packer &pk, const std::vector<TaskArg> &args,
              const std::shared_ptr<Session> &session) {
  pk.pack_array(static_cast<uint32_t>(args.size()));
  uint64_t buffer = 0;
  for (const auto &arg : args) {
    pk.pack_map(1);
    if (arg.ref) {
      PackStr(pk, "ref");
      PackBin(pk, Checked(arg.ref, session, "ObjectRef"));
    } else {
      PackStr(pk, "value");
      pk.pack_uint64(buffer++);
    }
  }
}

std::vector<std::string> ValueBuffers(const std::vector<TaskArg> &args) {
  std::vector<std::string> buffers;
  for (const auto &arg : args) {
    if (!arg.ref) buffers.push_back(arg.value);
  }
  return buffers;
}

// An options map: only the keys set, so the cluster's defaults apply.
class OptionsWriter {
 public:
  void Add(std::string key, std::function<void(Packer &)> write) {
    entries_.emplace_back(std::move(key), std::move(write));
  }
  void Pack(Packer &pk) const {
    pk.pack_map(static_cast<uint32_t>(entries_.size()));
    for (const auto &[key, write] : entries_) {
      PackStr(pk, key);
      write(pk);
    }
  }

 private:
  std::vector<std::pair<std::string, std::function<void(Packer &)>>> entries_;
};

// Ray's C++ resources map: "CPU", "GPU", "memory" are the options num_cpus,
// num_gpus and memory (when `named` lists them); the rest custom resources.
void AddResources(OptionsWriter &options, const std::unordered_map<std::string, double> &resources,
                  const std::unordered_set<std::string> &named) {
  static const std::unordered_map<std::string, std::string> option_of = {
      {"CPU", "num_cpus"}, {"GPU", "num_gpus"}, {"memory", "memory"}};
  std::unordered_map<std::string, double> custom;
  for (const auto &[name, amount] : resources) {
    if (!(amount >= 0)) {
      throw RayException("resource \"" + name + "\" must be a non-negative amount, not " +
                         std::to_string(amount));
    }
    auto it = option_of.find(name);
    if (it != option_of.end() && named.count(it->second)) {
      options.Add(it->second, [amount](Packer &pk) { pk.pack_double(amount); });
    } else {
      custom[name] = amount;
    }
  }
  if (!custom.empty()) {
    options.Add("resources", [custom](Packer &pk) {
      Codec<std::unordered_map<std::string, double>>::Pack(pk, custom);
    });
  }
}

// FUNC or CLASS: {"language": "python", "module", "name"}, Java's
// {"language": "java", "class_name"} with "name" for a function, or a C++
// function's {"language": "cpp", "name"} (a factory's adds "class_name").
void PackCallee(Packer &pk, const Callee &callee) {
  if (callee.language == "cpp") {  // a factory names its class too
    const bool factory = !callee.module_or_class.empty();
    pk.pack_map(factory ? 3 : 2);
    PackStr(pk, "language");
    PackStr(pk, "cpp");
    if (factory) {
      PackStr(pk, "class_name");
      PackStr(pk, callee.module_or_class);
    }
    PackStr(pk, "name");
    PackStr(pk, callee.name);
    return;
  }
  const bool java = callee.language == "java";
  pk.pack_map(java && callee.name.empty() ? 2 : 3);
  PackStr(pk, "language");
  PackStr(pk, callee.language);
  PackStr(pk, java ? "class_name" : "module");
  PackStr(pk, callee.module_or_class);
  if (!java || !callee.name.empty()) {
    PackStr(pk, "name");
    PackStr(pk, callee.name);
  }
}

HandlePtr FirstId(Session &session, const Reply &reply) {
  const msgpack::object &ids = Require(reply.body, "ids");
  if (ids.type != msgpack::type::ARRAY || ids.via.array.size != 1) Malformed("not one id");
  return session.Adopt(Bin(ids.via.array.ptr[0]), false);
}

// The error record (docs/protocol.md "Error record") as the exception named
// after its type, what() holding type, message and traceback.
[[noreturn]] void ThrowErrorRecord(const msgpack::object &record) {
  const std::string type = Str(Field(record, "type"));
  const std::string cause = Str(Field(record, "cause_type"));
  const std::string message = Str(Field(record, "message"));
  const std::string traceback = Str(Field(record, "traceback"));
  std::string text = (type.empty() ? "RayError" : type) + (cause.empty() ? "" : "(" + cause + ")") +
                     ": " + message;
  if (!traceback.empty() && message.find(traceback) == std::string::npos) {
    text += "\n" + traceback;
  }
  if (type == "RayTaskError") throw RayTaskException(text);
  if (type == "RayActorError" || type == "ActorDiedError" || type == "ActorUnavailableError" ||
      type == "ActorUnschedulableError") {
    throw RayActorException(text);
  }
  if (type == "WorkerCrashedError" || type == "NodeDiedError") throw RayWorkerException(text);
  if (type == "OwnerDiedError" || type == "ReferenceCountingAssertionError" ||
      type.rfind("Object", 0) == 0) {
    throw UnreconstructableException(text);  // ObjectLostError and its kin
  }
  if (type == "GetTimeoutError") throw RayTimeoutException(text);
  if (type == "RuntimeEnvSetupError") throw RayRuntimeEnvException(text);
  throw RayException(text);
}

std::vector<std::string> IdsOf(const std::vector<HandlePtr> &refs,
                               const std::shared_ptr<Session> &session) {
  std::vector<std::string> ids;
  ids.reserve(refs.size());
  for (const auto &ref : refs) ids.push_back(Checked(ref, session, "ObjectRef"));
  return ids;
}

void PackTimeout(Packer &pk, int timeout_ms) {
  if (timeout_ms < 0) {
    pk.pack_nil();
  } else {
    pk.pack_int(timeout_ms);
  }
}

}  // namespace

HandlePtr Put(std::string value) {
  auto session = CurrentSession();
  Reply reply = session->Call(XLANG_PUT, [](Packer &pk) { pk.pack_map(0); },
                              std::vector<std::string>{std::move(value)});
  return session->Adopt(Bin(Require(reply.body, "id")), false);
}

std::vector<std::string> Get(const std::vector<HandlePtr> &refs, int timeout_ms) {
  auto session = CurrentSession();
  const std::vector<std::string> ids = IdsOf(refs, session);
  Reply reply = session->Call(XLANG_GET, [&](Packer &pk) {
    pk.pack_map(2);
    PackStr(pk, "ids");
    PackIds(pk, ids);
    PackStr(pk, "timeout_ms");
    PackTimeout(pk, timeout_ms);
  });
  const msgpack::object &timed_out = Require(reply.body, "timed_out");
  if (timed_out.type == msgpack::type::BOOLEAN && timed_out.via.boolean) {
    throw RayTimeoutException("Get timed out: some object(s) not ready within " +
                              std::to_string(timeout_ms) + " ms");
  }
  const msgpack::object &results = Require(reply.body, "results");
  if (results.type != msgpack::type::ARRAY || results.via.array.size != ids.size()) {
    Malformed("not one result per id");
  }
  std::vector<std::string> values;
  values.reserve(ids.size());
  size_t buffer = 0;
  for (uint32_t i = 0; i < results.via.array.size; i++) {
    const msgpack::object &result = results.via.array.ptr[i];
    if (Str(Field(result, "status")) == "ok") {
      if (buffer >= reply.buffers.size()) Malformed("fewer buffers than values");
      values.push_back(std::move(reply.buffers[buffer++]));
    } else {
      ThrowErrorRecord(Require(result, "error"));
    }
  }
  return values;
}

std::vector<bool> Wait(const std::vector<HandlePtr> &refs, int num_objects, int timeout_ms) {
  if (num_objects < 1 || static_cast<size_t>(num_objects) > refs.size()) {
    throw RayException("Wait: num_objects must be between 1 and the number of refs (" +
                       std::to_string(refs.size()) + "), not " + std::to_string(num_objects));
  }
  auto session = CurrentSession();
  const std::vector<std::string> ids = IdsOf(refs, session);
  Reply reply = session->Call(XLANG_WAIT, [&](Packer &pk) {
    pk.pack_map(4);
    PackStr(pk, "ids");
    PackIds(pk, ids);
    PackStr(pk, "num_returns");
    pk.pack_int(num_objects);
    PackStr(pk, "timeout_ms");
    PackTimeout(pk, timeout_ms);
    PackStr(pk, "fetch_local");
    pk.pack_true();
  });
  const msgpack::object &ready = Require(reply.body, "ready");
  if (ready.type != msgpack::type::ARRAY) Malformed("\"ready\" is not a list");
  std::unordered_set<std::string> ready_ids;
  for (uint32_t i = 0; i < ready.via.array.size; i++) ready_ids.insert(Bin(ready.via.array.ptr[i]));
  std::vector<bool> is_ready;
  is_ready.reserve(ids.size());
  for (const auto &id : ids) is_ready.push_back(ready_ids.count(id) > 0);
  return is_ready;
}

HandlePtr SubmitTask(const Callee &function, const std::vector<TaskArg> &args,
                     const CallOptions &options) {
  auto session = CurrentSession();
  OptionsWriter opts;
  if (!options.name.empty()) {
    opts.Add("name", [name = options.name](Packer &pk) { PackStr(pk, name); });
  }
  AddResources(opts, options.resources, {"num_cpus", "num_gpus", "memory"});
  Reply reply = session->Call(XLANG_SUBMIT_TASK, [&](Packer &pk) {
    pk.pack_map(3);
    PackStr(pk, "function");
    PackCallee(pk, function);
    PackStr(pk, "args");
    PackArgs(pk, args, session);
    PackStr(pk, "options");
    opts.Pack(pk);
  }, ValueBuffers(args));
  return FirstId(*session, reply);
}

HandlePtr CreateActor(const Callee &actor_class, const std::vector<TaskArg> &args,
                      const ActorCreationOptions &options) {
  auto session = CurrentSession();
  OptionsWriter opts;
  if (!options.name.empty()) {
    opts.Add("name", [name = options.name](Packer &pk) { PackStr(pk, name); });
  }
  if (options.ray_namespace) {
    opts.Add("namespace", [ns = *options.ray_namespace](Packer &pk) { PackStr(pk, ns); });
  }
  AddResources(opts, options.resources, {"num_cpus"});
  if (options.max_restarts) {
    opts.Add("max_restarts", [n = *options.max_restarts](Packer &pk) { pk.pack_int(n); });
  }
  if (options.max_concurrency) {
    opts.Add("max_concurrency", [n = *options.max_concurrency](Packer &pk) { pk.pack_int(n); });
  }
  Reply reply = session->Call(XLANG_CREATE_ACTOR, [&](Packer &pk) {
    pk.pack_map(3);
    PackStr(pk, "class");
    PackCallee(pk, actor_class);
    PackStr(pk, "args");
    PackArgs(pk, args, session);
    PackStr(pk, "options");
    opts.Pack(pk);
  }, ValueBuffers(args));
  return session->Adopt(Bin(Require(reply.body, "actor_id")), true);
}

HandlePtr CallActor(const HandlePtr &actor, const std::string &method,
                    const std::vector<TaskArg> &args) {
  auto session = CurrentSession();
  const std::string actor_id = Checked(actor, session, "actor handle");
  Reply reply = session->Call(XLANG_CALL_ACTOR, [&](Packer &pk) {
    pk.pack_map(4);
    PackStr(pk, "actor_id");
    PackBin(pk, actor_id);
    PackStr(pk, "method");
    PackStr(pk, method);
    PackStr(pk, "args");
    PackArgs(pk, args, session);
    PackStr(pk, "options");
    pk.pack_map(1);
    PackStr(pk, "num_returns");
    pk.pack_int(1);
  }, ValueBuffers(args));
  return FirstId(*session, reply);
}

HandlePtr GetActor(const std::string &name, const std::optional<std::string> &ray_namespace) {
  if (name.empty()) throw RayException("GetActor: the actor's name must not be empty");
  auto session = CurrentSession();
  try {
    Reply reply = session->Call(XLANG_GET_ACTOR, [&](Packer &pk) {
      pk.pack_map(2);
      PackStr(pk, "name");
      PackStr(pk, name);
      PackStr(pk, "namespace");
      Codec<std::optional<std::string>>::Pack(pk, ray_namespace);
    });
    return session->Adopt(Bin(Require(reply.body, "actor_id")), true);
  } catch (const RequestError &e) {
    if (std::string(e.what()).rfind("ValueError", 0) == 0) return nullptr;  // no such actor
    throw;
  }
}

void KillActor(const HandlePtr &actor, bool no_restart) {
  auto session = CurrentSession();
  const std::string actor_id = Checked(actor, session, "actor handle");
  session->Call(XLANG_KILL_ACTOR, [&](Packer &pk) {
    pk.pack_map(2);
    PackStr(pk, "actor_id");
    PackBin(pk, actor_id);
    PackStr(pk, "no_restart");
    no_restart ? pk.pack_true() : pk.pack_false();
  });
}

}  // namespace internal
}  // namespace ray
