// ray::Init's settings, with Ray's field names. solray's C++ client is a thin
// client of a running cluster, so the fields that would start or shape a
// local cluster are refused by ray::Init (with an error naming them) rather
// than ignored. The cluster token is never a setting: it comes from
// SOLRAY_TOKEN or SOLRAY_TOKEN_FILE, like every solray client's.
#pragma once

#include <string>
#include <vector>

namespace ray {

class RayConfig {
 public:
  // The cluster's client server, HOST:PORT (`solray start --head` prints it;
  // port 10001 by default, used when only HOST is given; a "ray://" prefix
  // is accepted). Empty: the RAY_ADDRESS environment variable.
  std::string address = "";

  // Not supported (there is no local mode): ray::Init refuses true.
  bool local_mode = false;

  // Directories the job's Python workers import the modules of PyFunction
  // and PyActorClass from (the job's code_search_path, on sys.path there).
  // Paths on the cluster's machines; a relative one is made absolute here.
  std::vector<std::string> code_search_path;

  // Not supported (ray::Init starts no cluster): ray::Init refuses any.
  std::vector<std::string> head_args = {};

  // The job's namespace (named actors live in one); empty: a fresh one.
  std::string ray_namespace = "";
};

}  // namespace ray
