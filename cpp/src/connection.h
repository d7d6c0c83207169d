// A TCP connection to a cluster's client server that has passed solray's
// token handshake (solray/_private/transport.py): nothing else is sent or
// read before the server has shown it holds the token too.
#pragma once

#include <cstddef>
#include <string>

namespace ray {
namespace internal {

struct Address {
  std::string host;
  int port = 0;
  std::string ToString() const { return host + ":" + std::to_string(port); }
};

class Connection {
 public:
  // Connects and authenticates; throws RayException saying what failed.
  Connection(const Address &address, const std::string &token);
  ~Connection();
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  // Whole writes; false when the connection is gone. One writer at a time.
  bool WriteAll(const char *data, size_t size);
  // Exactly size bytes; false when the peer closed or the connection broke.
  // One reader at a time.
  bool ReadExact(char *data, size_t size);
  // Ends both directions: a blocked ReadExact returns false.
  void ShutDown();

 private:
  void Handshake(const std::string &token);
  // greeting: the server's first message (else its proof), for the errors.
  void ReadHandshake(char *data, size_t size, bool greeting);

  Address address_;
  int fd_ = -1;
};

}  // namespace internal
}  // namespace ray
