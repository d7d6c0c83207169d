// The client end of transport.py's handshake, in blocking POSIX calls:
//
//   server -> client   MAGIC + VERSION + server nonce (32 bytes)
//   client -> server   VERSION + HMAC(token, "client" + server nonce) + client nonce
//   server -> client   HMAC(token, "server" + client nonce)
//
// VERSION (protocol version u16 LE, solray version NUL-padded to 16 bytes)
// is the solray this library was built with (CMakeLists.txt reads it from
// the Python package): a server of another version is refused, naming both.
#include "connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ray/api/ray_exception.h>

namespace ray {
namespace internal {
namespace {

constexpr char MAGIC[] = "SOLRAY02";
constexpr size_t MAGIC_LEN = 8;
constexpr size_t VERSION_LEN = 18;
constexpr size_t NONCE_LEN = 32;
constexpr size_t DIGEST_LEN = 32;
// The server gives up on a handshake after 10 s; a bit longer here, so its
// closing (and not our timeout) says what happened when it is the slow one.
constexpr int HANDSHAKE_TIMEOUT_MS = 15000;

std::string VersionBlock() {
  std::string block(VERSION_LEN, '\0');
  const uint16_t protocol = SOLRAY_PROTOCOL_VERSION;
  block[0] = static_cast<char>(protocol & 0xff);
  block[1] = static_cast<char>(protocol >> 8);
  const std::string version = SOLRAY_VERSION;
  std::memcpy(&block[2], version.data(), std::min<size_t>(version.size(), 16));
  return block;
}

std::string Describe(const std::string &block) {
  const unsigned protocol = static_cast<unsigned char>(block[0]) |
                            (static_cast<unsigned char>(block[1]) << 8);
  std::string name = block.substr(2, 16);
  name = name.substr(0, name.find('\0'));
  return "solray " + name + " (protocol " + std::to_string(protocol) + ")";
}

std::string Digest(const std::string &token, const std::string &role, const std::string &nonce) {
  const std::string message = role + nonce;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
       reinterpret_cast<const unsigned char *>(message.data()), message.size(), out, &out_len);
  return std::string(reinterpret_cast<char *>(out), out_len);
}

}  // namespace

Connection::Connection(const Address &address, const std::string &token) : address_(address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo *found = nullptr;
  const std::string port = std::to_string(address.port);
  int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    throw RayException("cannot resolve " + address.ToString() + ": " + gai_strerror(rc));
  }
  std::string error;
  for (addrinfo *ai = found; ai != nullptr && fd_ < 0; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = std::strerror(errno);
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      fd_ = fd;
    } else {
      error = std::strerror(errno);
      close(fd);
    }
  }
  freeaddrinfo(found);
  if (fd_ < 0) {
    throw RayException("cannot connect to the cluster's client server at " + address.ToString() +
                       ": " + error +
                       " (is the cluster running? `solray start --head` prints the address)");
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  try {
    Handshake(token);
  } catch (...) {
    close(fd_);
    fd_ = -1;
    throw;
  }
}

Connection::~Connection() {
  if (fd_ >= 0) close(fd_);
}

void Connection::Handshake(const std::string &token) {
  std::string greeting(MAGIC_LEN + VERSION_LEN + NONCE_LEN, '\0');
  ReadHandshake(&greeting[0], greeting.size(), true);
  if (greeting.compare(0, MAGIC_LEN, MAGIC) != 0) {
    throw RayException(address_.ToString() +
                       " is not a solray endpoint (give the address of the cluster's client "
                       "server, which `solray start --head` prints)");
  }
  const std::string ours = VersionBlock();
  const std::string theirs = greeting.substr(MAGIC_LEN, VERSION_LEN);
  if (theirs != ours) {
    // As transport.py's client: tell the server our version (it logs the
    // mismatch), without a proof.
    std::string refusal = ours + std::string(DIGEST_LEN + NONCE_LEN, '\0');
    WriteAll(refusal.data(), refusal.size());
    throw RayException("Version mismatch: " + address_.ToString() + " runs " + Describe(theirs) +
                       ", this C++ client was built for " + Describe(ours) +
                       ". Build the client from the solray the cluster runs.");
  }
  const std::string server_nonce = greeting.substr(MAGIC_LEN + VERSION_LEN);
  std::string client_nonce(NONCE_LEN, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char *>(&client_nonce[0]), NONCE_LEN) != 1) {
    throw RayException("cannot make a random nonce (OpenSSL's RAND_bytes failed)");
  }
  const std::string answer = ours + Digest(token, "client", server_nonce) + client_nonce;
  if (!WriteAll(answer.data(), answer.size())) {
    throw RayException("the connection to " + address_.ToString() +
                       " broke during authentication");
  }
  std::string proof(DIGEST_LEN, '\0');
  ReadHandshake(&proof[0], proof.size(), false);
  const std::string expected = Digest(token, "server", client_nonce);
  if (CRYPTO_memcmp(proof.data(), expected.data(), DIGEST_LEN) != 0) {
    throw RayException("authentication failed: the server at " + address_.ToString() +
                       " does not hold the cluster token");
  }
}

void Connection::ReadHandshake(char *data, size_t size, bool greeting) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(HANDSHAKE_TIMEOUT_MS);
  size_t got = 0;
  while (got < size) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fd_, POLLIN, 0};
    int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      throw RayException("authentication with " + address_.ToString() + " timed out: it never " +
                         (greeting ? "greeted this client" : "answered this client's proof"));
    }
    ssize_t n = ready > 0 ? recv(fd_, data + got, size - got, 0) : -1;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::string(" (") + std::strerror(errno) + ")" : "";
      if (greeting) {
        throw RayException("the server at " + address_.ToString() +
                           " closed the connection before it greeted this client" + why +
                           " (a cluster with TLS on? The C++ client speaks plain TCP only)");
      }
      throw RayException("authentication failed: the server at " + address_.ToString() +
                         " closed the connection" + why +
                         ": it refused this client's token (SOLRAY_TOKEN or SOLRAY_TOKEN_FILE "
                         "must hold the token of the cluster there)");
    }
    got += static_cast<size_t>(n);
  }
}

bool Connection::WriteAll(const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd_, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool Connection::ReadExact(char *data, size_t size) {
  while (size > 0) {
    ssize_t n = recv(fd_, data, size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

void Connection::ShutDown() { shutdown(fd_, SHUT_RDWR); }

}  // namespace internal
}  // namespace ray
