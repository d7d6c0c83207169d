// Ray's C++ exception types (namespace ray::internal, as Ray names them).
// An error the cluster reports (the cross-language error record of
// docs/protocol.md) is thrown as the class named after its type, with
// what() holding the type, the message and the Python traceback: a C++
// user sees what a Python user of ray.get would.
#pragma once

#include <exception>
#include <string>

namespace ray {
namespace internal {

class RayException : public std::exception {
 public:
  explicit RayException(std::string msg) : msg_(std::move(msg)) {}
  const char *what() const noexcept override { return msg_.c_str(); }

 private:
  std::string msg_;
};

// RayTaskError: the task (or actor method) raised.
class RayTaskException : public RayException {
  using RayException::RayException;
};

// RayActorError, ActorDiedError, ActorUnavailableError: the actor is gone.
class RayActorException : public RayException {
  using RayException::RayException;
};

// WorkerCrashedError: the process running the task died.
class RayWorkerException : public RayException {
  using RayException::RayException;
};

// ObjectLostError and its kin: the object cannot be had any more.
class UnreconstructableException : public RayException {
  using RayException::RayException;
};

// GetTimeoutError: a Get with a timeout ran out of time.
class RayTimeoutException : public RayException {
  using RayException::RayException;
};

// RuntimeEnvSetupError: the job's runtime environment could not be set up.
class RayRuntimeEnvException : public RayException {
  using RayException::RayException;
};

}  // namespace internal
}  // namespace ray
