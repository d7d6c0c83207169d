// ray::Init and ray::Shutdown: where the cluster is, the token, and the one
// session of this process.
#include <ray/api.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "session.h"

namespace ray {
namespace internal {
namespace {

constexpr int DEFAULT_CLIENT_SERVER_PORT = 10001;  // as `solray start --head`'s
constexpr size_t MAX_TOKEN_BYTES = 1024;           // as services.MAX_TOKEN_BYTES

std::mutex g_mu;
std::shared_ptr<Session> g_session;

// HOST:PORT, [IPv6]:PORT, HOST alone (the default port), with or without
// "ray://".
Address ParseAddress(std::string text, const std::string &source) {
  const std::string given = text;
  if (text.rfind("ray://", 0) == 0) text = text.substr(6);
  Address address;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) throw RayException("bad address \"" + given + "\" in " + source);
    address.host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') throw RayException("bad address \"" + given + "\" in " + source);
      port = text.substr(close + 2);
    }
  } else {
    size_t colon = text.rfind(':');
    address.host = text.substr(0, colon);
    if (colon != std::string::npos) port = text.substr(colon + 1);
  }
  address.port = DEFAULT_CLIENT_SERVER_PORT;
  if (!port.empty()) {
    bool digits = port.size() <= 5;
    for (char c : port) digits = digits && std::isdigit(static_cast<unsigned char>(c));
    address.port = digits ? std::stoi(port) : 0;
  }
  if (address.host.empty() || address.port < 1 || address.port > 65535) {
    throw RayException("bad address \"" + given + "\" in " + source +
                       ": give the cluster's client server as HOST:PORT");
  }
  return address;
}

std::string ParseToken(const std::string &text, const std::string &source) {
  std::string hex;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) hex.push_back(c);
  }
  std::string token;
  bool ok = hex.size() % 2 == 0;
  for (size_t i = 0; ok && i < hex.size(); i += 2) {
    ok = std::isxdigit(static_cast<unsigned char>(hex[i])) &&
         std::isxdigit(static_cast<unsigned char>(hex[i + 1]));
    if (ok) token.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  if (!ok) throw RayException("the cluster token in " + source + " must be hex");
  if (token.empty() || token.size() > MAX_TOKEN_BYTES) {
    throw RayException("the cluster token in " + source + " must hold 1 to " +
                       std::to_string(MAX_TOKEN_BYTES) + " bytes, not " +
                       std::to_string(token.size()));
  }
  return token;
}

// As solray's Python clients: SOLRAY_TOKEN, else the file SOLRAY_TOKEN_FILE names.
std::string TokenFromEnvironment() {
  const char *token = std::getenv("SOLRAY_TOKEN");
  if (token != nullptr && *token != '\0') return ParseToken(token, "SOLRAY_TOKEN");
  const char *path = std::getenv("SOLRAY_TOKEN_FILE");
  if (path != nullptr && *path != '\0') {
    std::ifstream file(path);
    if (!file) {
      throw RayException(std::string("cannot read the cluster token file ") + path +
                         " (SOLRAY_TOKEN_FILE)");
    }
    std::stringstream text;
    text << file.rdbuf();
    return ParseToken(text.str(), std::string(path) + " (SOLRAY_TOKEN_FILE)");
  }
  throw RayException(
      "no cluster token: set SOLRAY_TOKEN_FILE to a copy of the cluster's token file "
      "(`solray start --head` prints its path), or SOLRAY_TOKEN to the hex in it");
}

}  // namespace

std::shared_ptr<Session> CurrentSession() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_session) {
    throw RayException("ray::Init() has not been called (or ray::Shutdown() was since)");
  }
  return g_session;
}

}  // namespace internal

void Init(RayConfig &config) {
  using namespace internal;
  if (config.local_mode) {
    throw RayException("RayConfig.local_mode is not supported: solray's C++ API connects to a "
                       "running cluster (RayConfig.address or RAY_ADDRESS)");
  }
  if (!config.head_args.empty()) {
    throw RayException("RayConfig.head_args is not supported: ray::Init starts no cluster; "
                       "start one with `solray start --head`");
  }
  std::string source = "RayConfig.address";
  std::string address = config.address;
  if (address.empty()) {
    const char *env = std::getenv("RAY_ADDRESS");
    address = env != nullptr ? env : "";
    source = "RAY_ADDRESS";
  }
  if (address.empty()) {
    throw RayException("no cluster address: set RayConfig.address or RAY_ADDRESS to the "
                       "cluster's client server, HOST:PORT (`solray start --head` prints it)");
  }
  const Address where = ParseAddress(address, source);
  const std::string token = TokenFromEnvironment();
  std::vector<std::string> code_search_path;
  for (const auto &entry : config.code_search_path) {
    code_search_path.push_back(std::filesystem::absolute(entry).lexically_normal().string());
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_session) throw RayException("ray::Init() was called already: call ray::Shutdown() first");
  auto session = std::make_shared<Session>(where, token);
  try {
    session->Hello(config.ray_namespace.empty()
                       ? std::nullopt
                       : std::optional<std::string>(config.ray_namespace),
                   code_search_path);
  } catch (const RequestError &) {
    throw;  // the client server's own answer says what is wrong
  } catch (const RayException &e) {
    // Another solray port (the control store's, a node's) passes the
    // handshake too, then drops a message it does not serve.
    throw RayException(std::string(e.what()) + " right after authenticating: is " +
                       where.ToString() +
                       " the cluster's client server? (`solray start --head` prints it as "
                       "ray://HOST:PORT)");
  }
  g_session = std::move(session);
}

void Init(RayConfig &config, int argc, char **argv) {
  RayConfig merged = config;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg.rfind("--ray_", 0) != 0) continue;  // the program's own arguments
    const size_t eq = arg.find('=');
    const std::string flag = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (flag == "--ray_address") {
      merged.address = value;
    } else if (flag == "--ray_code_search_path") {
      merged.code_search_path.clear();
      std::stringstream entries(value);
      for (std::string entry; std::getline(entries, entry, ':');) {
        if (!entry.empty()) merged.code_search_path.push_back(entry);
      }
    } else {
      throw internal::RayException("unsupported flag " + flag +
                                   ": solray's C++ API takes --ray_address and "
                                   "--ray_code_search_path (the token comes from SOLRAY_TOKEN "
                                   "or SOLRAY_TOKEN_FILE)");
    }
  }
  Init(merged);
}

void Init() {
  RayConfig config;
  Init(config);
}

bool IsInitialized() {
  std::lock_guard<std::mutex> lock(internal::g_mu);
  return internal::g_session != nullptr;
}

void Shutdown() {
  std::shared_ptr<internal::Session> session;
  {
    std::lock_guard<std::mutex> lock(internal::g_mu);
    session.swap(internal::g_session);
  }
  if (session) session->Close("ray::Shutdown() was called");
}

std::string GetNamespace() { return internal::CurrentSession()->Namespace(); }

}  // namespace ray
