// The test program's C++ remote functions and actor class
// (remote_functions.cc registers them).
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

int Plus(int a, int b);
std::string Greet(std::string name);
std::vector<double> Scale(std::vector<double> xs, double k);
int Divide(int a, int b);
int Crash(int code);

class Counter {
 public:
  explicit Counter(int start) : value_(start) {}
  static Counter *FactoryCreate(int start) { return new Counter(start); }
  int Add(int by) { return value_ += by; }
  int Get() const { return value_; }
  void Fail() { throw std::runtime_error("counter at " + std::to_string(value_) + " refuses"); }

 private:
  int value_;
};
