// C++ remote functions and an actor class of the test program (api_tests.cc's
// cpp_tasks and cpp_actors): built into libsolray_test_functions.so, which
// the cluster's C++ executor loads, and into the program, which names them.
#include "remote_functions.h"

#include <ray/api.h>

#include <cstdlib>

int Plus(int a, int b) { return a + b; }

std::string Greet(std::string name) { return "hello " + name; }

std::vector<double> Scale(std::vector<double> xs, double k) {
  for (auto &x : xs) x *= k;
  return xs;
}

int Divide(int a, int b) {
  if (b == 0) throw std::invalid_argument("Divide: division by zero");
  return a / b;
}

// The executor dies (test_cpp_api: the task fails saying so, the next call
// gets a new executor).
int Crash(int code) { std::_Exit(code); }

RAY_REMOTE(Plus, Greet, Scale, Divide, Crash);
RAY_REMOTE(Counter::FactoryCreate, &Counter::Add, &Counter::Get, &Counter::Fail);
