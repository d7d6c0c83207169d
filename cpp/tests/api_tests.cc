// Tests of solray's C++ API against a real cluster: tests/test_cpp_api.py
// starts one (`solray start --head`), builds this, and runs it with
//   RAY_ADDRESS=<client server>  SOLRAY_TOKEN_FILE=<copy of the token>
//   api_tests --ray_code_search_path=<tests/> --scratch=<empty dir> [case...]
// The Python it calls is tests/cpp_api_targets.py. Each case prints
// "PASS name" or "FAIL name: why"; the exit status is 1 if any failed.
// `api_tests --list` prints the case names; without names, all run but
// java_calls, cpp_tasks and cpp_actors (their code is not on the default
// code_search_path).
#include <ray/api.h>

#include "remote_functions.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>


namespace {

using ray::internal::RayActorException;
using ray::internal::RayException;
using ray::internal::RayTaskException;
using ray::internal::RayTimeoutException;

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string At(int line) { return "api_tests.cc:" + std::to_string(line) + ": "; }

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) throw Failure(At(__LINE__) + "CHECK(" #cond ") failed"); \
  } while (0)

// The exception's what(), or a failure if `f` throws nothing or another type.
template <typename E, typename F>
std::string Throws(F f, const char *expr, int line) {
  try {
    f();
  } catch (const E &e) {
    return e.what();
  } catch (const std::exception &e) {
    throw Failure(At(line) + expr + " threw another type: " + e.what());
  }
  throw Failure(At(line) + expr + " did not throw");
}
#define CHECK_THROWS(E, stmt) Throws<E>([&] { stmt; }, #stmt, __LINE__)

void CheckContains(const std::string &text, const std::string &part, int line) {
  if (text.find(part) == std::string::npos) {
    throw Failure(At(line) + "\"" + part + "\" not in: " + text);
  }
}
#define CHECK_CONTAINS(text, part) CheckContains(text, part, __LINE__)

// Polls `condition` until it holds; a failure after the deadline.
void WaitFor(const std::function<bool()> &condition, const char *what, int line) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw Failure(At(line) + "not within 30 s: " + what);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}
#define WAIT_FOR(cond) WaitFor([&] { return (cond); }, #cond, __LINE__)

ray::RayConfig g_config;
int g_argc;
char **g_argv;
std::string g_scratch;  // a directory for the files tasks wait on

void Touch(const std::string &path) { std::ofstream(path) << "go"; }

const char *const MODULE = "cpp_api_targets";

template <typename R>
ray::PyFunction<R> Py(const char *name) {
  return ray::PyFunction<R>{MODULE, name};
}

const ray::PyActorClass COUNTER{MODULE, "Counter"};
const ray::PyActorMethod<int> INCREMENT{"increment"};

bool Held(const std::string &object_id) {
  return *ray::Task(Py<bool>("held")).Remote(object_id).Get();
}

// ---------- cases ----------

void SeedExamples() {
  // The Objects page's C++ code, as written there.
  // Put an object in Ray's object store.
  int y = 1;
  ray::ObjectRef<int> object_ref = ray::Put(y);

  // Get the value of one object ref.
  ray::ObjectRef<int> obj_ref = ray::Put(1);
  CHECK(*obj_ref.Get() == 1);

  // Get the values of multiple object refs in parallel.
  std::vector<ray::ObjectRef<int>> obj_refs;
  for (int i = 0; i < 3; i++) {
    obj_refs.emplace_back(ray::Put(i));
  }
  auto results = ray::Get(obj_refs);
  CHECK(results.size() == 3);
  CHECK(*results[0] == 0);
  CHECK(*results[1] == 1);
  CHECK(*results[2] == 2);
  CHECK(*ray::Get(object_ref) == 1);
}

// Through the object store, through a Python task and back, and as Python
// sees it (the type a Python function is given).
template <typename T>
void RoundTrip(const T &value, const std::string &python_sees, int line) {
  if (!(*ray::Get(ray::Put(value)) == value)) throw Failure(At(line) + "Put/Get changed it");
  if (!(*ray::Task(Py<T>("echo")).Remote(value).Get() == value)) {
    throw Failure(At(line) + "a Python echo changed it");
  }
  std::string seen = *ray::Task(Py<std::string>("describe")).Remote(ray::Put(value)).Get();
  if (seen != python_sees) {
    throw Failure(At(line) + "Python sees " + seen + ", not " + python_sees);
  }
}
#define ROUND_TRIP(value, python_sees) RoundTrip(value, python_sees, __LINE__)

void EveryValueKind() {
  ROUND_TRIP(42, "int");
  ROUND_TRIP(std::numeric_limits<int64_t>::min(), "int");
  ROUND_TRIP(std::numeric_limits<uint64_t>::max(), "int");
  ROUND_TRIP(2.5, "float");
  ROUND_TRIP(1.5f, "float");
  ROUND_TRIP(true, "bool");
  ROUND_TRIP(std::string("h\xc3\xa9llo \xe2\x9c\x93"), "str");
  ROUND_TRIP(std::vector<int32_t>({1, -2, 3}), "ndarray int32 [3]");
  ROUND_TRIP(std::vector<int64_t>({-5, 1LL << 40}), "ndarray int64 [2]");
  ROUND_TRIP(std::vector<int16_t>({-300}), "ndarray int16 [1]");
  ROUND_TRIP(std::vector<uint8_t>({0, 255}), "ndarray uint8 [2]");
  ROUND_TRIP(std::vector<uint64_t>({std::numeric_limits<uint64_t>::max()}), "ndarray uint64 [1]");
  ROUND_TRIP(std::vector<double>({0.5, -1e300}), "ndarray float64 [2]");
  ROUND_TRIP(std::vector<float>({0.25f}), "ndarray float32 [1]");
  ROUND_TRIP(std::vector<bool>({true, false, true}), "ndarray bool [3]");
  ROUND_TRIP(std::vector<double>(), "ndarray float64 [0]");
  ROUND_TRIP(std::vector<std::string>({"a", "b"}), "list str str");
  ROUND_TRIP(std::vector<std::vector<int>>({{1}, {2, 3}}), "list ndarray ndarray");
  ROUND_TRIP((std::map<std::string, int>{{"a", 1}, {"b", 2}}), "dict str:int str:int");
  ROUND_TRIP((std::unordered_map<int64_t, std::string>{{7, "x"}}), "dict int:str");
  ROUND_TRIP((std::map<std::string, std::vector<double>>{{"w", {1.0, 2.0}}}), "dict str:ndarray");
  ROUND_TRIP(std::optional<int>(), "NoneType");
  ROUND_TRIP(std::optional<int>(5), "int");
  // A big array crosses whole.
  std::vector<double> big(1 << 20);
  for (size_t i = 0; i < big.size(); i++) big[i] = static_cast<double>(i) / 3;
  CHECK(*ray::Get(ray::Put(big)) == big);
}

void ValuesPythonMakes() {
  // A list of numbers reads as a vector, an int as a double.
  auto list = ray::Task(Py<std::vector<double>>("echo")).Remote(std::vector<std::optional<int>>{1, 2});
  CHECK(*list.Get() == std::vector<double>({1.0, 2.0}));
  CHECK(*ray::Task(Py<double>("add")).Remote(1, 2).Get() == 3.0);
  // None: ObjectRef<void> waits, std::optional reads it as empty.
  ray::Task(Py<void>("nothing")).Remote().Get();
  CHECK(!ray::Task(Py<std::optional<int>>("nothing")).Remote().Get()->has_value());
  // What does not fit says so.
  std::string what = CHECK_THROWS(
      RayException, ray::Task(Py<int>("echo")).Remote(int64_t(5000000000)).Get());
  CHECK_CONTAINS(what, "the int 5000000000 does not fit int32_t");
  what = CHECK_THROWS(RayException, ray::Task(Py<int>("echo")).Remote("text").Get());
  CHECK_CONTAINS(what, "cannot read a Python str as int32_t");
  what = CHECK_THROWS(RayException,
                      ray::Task(Py<std::vector<uint8_t>>("echo")).Remote(std::vector<int>{300}).Get());
  CHECK_CONTAINS(what, "does not fit std::vector<uint8_t>");
  what = CHECK_THROWS(RayException, ray::Task(Py<std::vector<int64_t>>("matrix")).Remote().Get());
  CHECK_CONTAINS(what, "cannot read a Python numpy int64 array of shape [2, 3] as std::vector<int64_t>");
  // A Python value with no cross-language form: an error naming its type.
  what = CHECK_THROWS(RayException, ray::Task(Py<int>("python_set")).Remote().Get());
  CHECK_CONTAINS(what, "set");
}

void GetWithTimeout() {
  const std::string flag = g_scratch + "/get-timeout";
  auto ref = ray::Task(Py<std::string>("released_when")).Remote(flag);
  const auto start = std::chrono::steady_clock::now();
  std::string what = CHECK_THROWS(RayTimeoutException, ray::Get(ref, 300));
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(300));
  CHECK_CONTAINS(what, "timed out");
  CHECK_THROWS(RayTimeoutException, ref.Get(0));
  std::vector<ray::ObjectRef<std::string>> refs{ray::Put(std::string("ready")), ref};
  CHECK_THROWS(RayTimeoutException, ray::Get(refs, 100));
  Touch(flag);
  CHECK(*ray::Get(ref, 60000) == "released");
  CHECK(*ray::Get(refs, 60000)[1] == "released");
}

void Wait() {
  const std::string flag = g_scratch + "/wait";
  auto slow = ray::Task(Py<std::string>("released_when")).Remote(flag);
  auto fast = ray::Task(Py<std::string>("echo")).Remote("fast");
  std::vector<ray::ObjectRef<std::string>> refs{slow, fast};
  ray::WaitResult<std::string> first = ray::Wait(refs, 1, 30000);
  CHECK(first.ready.size() == 1 && first.ready.front() == fast);
  CHECK(first.unready.size() == 1 && first.unready.front() == slow);
  ray::WaitResult<std::string> timed_out = ray::Wait(refs, 2, 200);
  CHECK(timed_out.ready.size() == 1 && timed_out.unready.front() == slow);
  Touch(flag);
  ray::WaitResult<std::string> both = ray::Wait(refs, 2, -1);
  CHECK(both.ready.size() == 2 && both.unready.empty());
  CHECK(both.ready.front() == slow);  // in the order given
  std::string what = CHECK_THROWS(RayException, ray::Wait(refs, 3, 0));
  CHECK_CONTAINS(what, "num_objects must be between 1 and the number of refs (2), not 3");
}

void PythonFunctionArgs() {
  auto one = ray::Put(1);
  CHECK(*ray::Task(Py<int>("add")).Remote(one, 2).Get() == 3);
  CHECK(*ray::Task(Py<int>("add")).Remote(one, one).Get() == 2);
  auto three = ray::Task(Py<int>("add")).Remote(1, 2);
  CHECK(*ray::Task(Py<int>("add")).Remote(three, 10).Get() == 13);  // a task's result as an arg
  CHECK(*ray::Task(Py<std::string>("add")).Remote(std::string("ab"), "cd").Get() == "abcd");
  auto named = ray::Task(Py<int>("add")).SetName("cpp-add").SetResource("CPU", 1).Remote(2, 2);
  CHECK(*named.Get() == 4);
  std::string what =
      CHECK_THROWS(RayException, ray::Task(Py<int>("add")).SetResource("CPU", -1).Remote(1, 1));
  CHECK_CONTAINS(what, "resource \"CPU\" must be a non-negative amount");
  what = CHECK_THROWS(RayException, ray::Task(Py<int>("no_such_function")).Remote());
  CHECK_CONTAINS(what, "no_such_function");
  ray::ObjectRef<int> empty;
  what = CHECK_THROWS(RayException, ray::Task(Py<int>("add")).Remote(empty, 1));
  CHECK_CONTAINS(what, "empty ObjectRef");
}

void PythonActor() {
  auto counter = ray::Actor(COUNTER).Remote(10);
  CHECK(*counter.Task(INCREMENT).Remote(1).Get() == 11);
  auto five = ray::Put(5);
  CHECK(*counter.Task(INCREMENT).Remote(five).Get() == 16);
  std::string what = CHECK_THROWS(
      RayTaskException, counter.Task(ray::PyActorMethod<void>{"fail"}).Remote().Get());
  CHECK_CONTAINS(what, "RuntimeError");
  CHECK_CONTAINS(what, "counter at 16 refuses");

  auto named = ray::Actor(COUNTER).SetName("cpp-counter").Remote(0);
  std::optional<ray::ActorHandleXlang> found = ray::GetActor("cpp-counter");
  CHECK(found.has_value() && found->ID() == named.ID());
  CHECK(*found->Task(INCREMENT).Remote(2).Get() == 2);
  CHECK(*named.Task(INCREMENT).Remote(3).Get() == 5);
  CHECK(!ray::GetActor("no-such-actor").has_value());
  CHECK(!ray::GetActor("cpp-counter", "another-namespace").has_value());

  named.Kill();
  what = CHECK_THROWS(RayActorException, named.Task(INCREMENT).Remote(1).Get());
  CHECK_CONTAINS(what, "Actor");
}

void PythonExceptionWithTraceback() {
  auto ref = ray::Task(Py<double>("divide")).Remote(1, 0);
  std::string what = CHECK_THROWS(RayTaskException, ref.Get());
  CHECK_CONTAINS(what, "RayTaskError(ZeroDivisionError)");
  CHECK_CONTAINS(what, "division by zero");
  CHECK_CONTAINS(what, "Traceback (most recent call last)");
  CHECK_CONTAINS(what, "in divide");
  std::vector<ray::ObjectRef<double>> refs{ray::Task(Py<double>("divide")).Remote(1, 2), ref};
  CHECK_THROWS(RayTaskException, ray::Get(refs));
  CHECK(*refs[0].Get() == 0.5);
}

void ReleasedWithTheLastHandle() {
  std::string dropped, sentinel;
  auto kept = ray::Put(std::vector<double>(50000, 1.0));
  {
    auto big = ray::Put(std::vector<double>(50000, 2.0));
    auto copy = big;
    dropped = big.ID();
    auto kept_copy = kept;
    CHECK(Held(dropped) && Held(kept.ID()));
  }
  WAIT_FOR(!Held(dropped));
  {
    auto last = ray::Put(3);
    sentinel = last.ID();
  }
  WAIT_FOR(!Held(sentinel));
  CHECK(Held(kept.ID()));  // kept_copy died before the sentinel: its release would be out by now
  CHECK(*kept.Get() == std::vector<double>(50000, 1.0));

  {  // an actor: its last handle gone, the cluster ends it and its name is free
    auto actor = ray::Actor(COUNTER).SetName("cpp-dropped").Remote(0);
    CHECK(*actor.Task(INCREMENT).Remote(1).Get() == 1);
  }
  WAIT_FOR(!ray::GetActor("cpp-dropped").has_value());
}

void ConcurrentCalls() {
  const std::string flag = g_scratch + "/concurrent";
  auto slow = ray::Task(Py<std::string>("released_when")).Remote(flag);
  std::string blocked_result;
  std::thread blocked([&] { blocked_result = *slow.Get(); });  // waits while others run
  std::vector<std::thread> threads;
  std::vector<int> sums(4, 0);
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; i++) sums[t] += *ray::Put(t * 100 + i).Get();
    });
  }
  for (auto &thread : threads) thread.join();
  for (int t = 0; t < 4; t++) CHECK(sums[t] == t * 2000 + 190);
  Touch(flag);
  blocked.join();
  CHECK(blocked_result == "released");
}

void InitAndShutdown() {
  CHECK(ray::IsInitialized());
  CHECK(ray::GetNamespace() == "cpp-tests");
  std::string what = CHECK_THROWS(RayException, ray::Init(g_config, g_argc, g_argv));
  CHECK_CONTAINS(what, "ray::Init() was called already");
  ray::RayConfig local = g_config;
  local.local_mode = true;
  what = CHECK_THROWS(RayException, ray::Init(local));
  CHECK_CONTAINS(what, "local_mode is not supported");
  ray::RayConfig bad = g_config;
  bad.address = "127.0.0.1:99999";
  what = CHECK_THROWS(RayException, ray::Init(bad));
  CHECK_CONTAINS(what, "bad address \"127.0.0.1:99999\" in RayConfig.address");
  char flag[] = "--ray_colour=red";
  char *argv[] = {g_argv[0], flag};
  what = CHECK_THROWS(RayException, ray::Init(g_config, 2, argv));
  CHECK_CONTAINS(what, "unsupported flag --ray_colour");

  auto before = ray::Put(7);
  ray::Shutdown();
  CHECK(!ray::IsInitialized());
  what = CHECK_THROWS(RayException, before.Get());
  CHECK_CONTAINS(what, "ray::Init() has not been called");

  // A wrong token is refused, and says where to look.
  setenv("SOLRAY_TOKEN", "00112233445566778899aabbccddeeff", 1);
  what = CHECK_THROWS(RayException, ray::Init(g_config, g_argc, g_argv));
  CHECK_CONTAINS(what, "refused this client's token");
  CHECK(!ray::IsInitialized());
  setenv("SOLRAY_TOKEN", "not hex", 1);
  what = CHECK_THROWS(RayException, ray::Init(g_config, g_argc, g_argv));
  CHECK_CONTAINS(what, "the cluster token in SOLRAY_TOKEN must be hex");
  unsetenv("SOLRAY_TOKEN");

  ray::Init(g_config, g_argc, g_argv);
  what = CHECK_THROWS(RayException, before.Get());
  CHECK_CONTAINS(what, "belongs to an earlier connection");
  what = CHECK_THROWS(RayException, ray::Task(Py<int>("add")).Remote(before, 1));
  CHECK_CONTAINS(what, "belongs to an earlier connection");
  CHECK(*ray::Put(8).Get() == 8);
}

// Run only when named (test_cpp_api.py gives the code_search_path the Java
// classes of test_xlang_java.py and solray's Java runtime jar).
void JavaCalls() {
  CHECK(*ray::Task(ray::JavaFunction<int>{"xlangtest.Calc", "add"}).Remote(1, 2).Get() == 3);
  auto greeting = ray::Task(ray::JavaFunction<std::string>{"xlangtest.Calc", "greet"}).Remote("cpp");
  CHECK(*greeting.Get() == "hello cpp");
  auto scaled = ray::Task(ray::JavaFunction<std::vector<double>>{"xlangtest.Calc", "scale"})
                    .Remote(std::vector<double>{1.5, -2}, ray::Put(2.0));
  CHECK(*scaled.Get() == std::vector<double>({3, -4}));
  std::string what = CHECK_THROWS(
      RayTaskException,
      ray::Task(ray::JavaFunction<int>{"xlangtest.Calc", "divide"}).Remote(1, 0).Get());
  CHECK_CONTAINS(what, "RayTaskError(java.lang.ArithmeticException)");
  CHECK_CONTAINS(what, "at xlangtest.Calc.divide");

  auto counter = ray::Actor(ray::JavaActorClass{"xlangtest.Counter"}).Remote(int64_t(5));
  CHECK(*counter.Task(ray::JavaActorMethod<int64_t>{"increment"}).Remote(int64_t(2)).Get() == 7);
  what = CHECK_THROWS(RayTaskException,
                      counter.Task(ray::JavaActorMethod<void>{"fail"}).Remote().Get());
  CHECK_CONTAINS(what, "java.lang.IllegalStateException");
  CHECK_CONTAINS(what, "counter broke");
  what = CHECK_THROWS(RayException,
                      ray::Actor(ray::JavaActorClass{"xlangtest.Counter", "pkg"}).Remote(1));
  CHECK_CONTAINS(what, "JavaActorClass.module_name must be empty");
}

int NotRemote(int x) { return x; }

// Run only when named (test_cpp_api.py gives the code_search_path the build
// folder: solray_cpp_worker and libsolray_test_functions.so).
void CppTasks() {
  CHECK(*ray::Task(Plus).Remote(1, 2).Get() == 3);
  auto three = ray::Task(Plus).Remote(1, 2);
  CHECK(*ray::Task(Plus).Remote(three, ray::Put(10)).Get() == 13);
  CHECK(*ray::Task(Greet).Remote("cpp").Get() == "hello cpp");
  auto scaled = ray::Task(Scale).Remote(std::vector<double>{1.5, -2}, 2);  // int to double
  CHECK(*scaled.Get() == std::vector<double>({3, -4}));
  std::string what = CHECK_THROWS(RayTaskException, ray::Task(Divide).Remote(1, 0).Get());
  CHECK_CONTAINS(what, "RayTaskError(std::invalid_argument)");
  CHECK_CONTAINS(what, "Divide: division by zero");
  what = CHECK_THROWS(RayException, ray::Task(NotRemote).Remote(1));
  CHECK_CONTAINS(what, "register it with RAY_REMOTE");
}

// Run only when named, as cpp_tasks.
void CppActors() {
  auto counter = ray::Actor(Counter::FactoryCreate).Remote(10);
  CHECK(*counter.Task(&Counter::Add).Remote(1).Get() == 11);
  CHECK(*counter.Task(&Counter::Add).Remote(ray::Put(5)).Get() == 16);
  CHECK(*counter.Task(&Counter::Get).Remote().Get() == 16);
  std::string what = CHECK_THROWS(RayTaskException, counter.Task(&Counter::Fail).Remote().Get());
  CHECK_CONTAINS(what, "RayTaskError(std::runtime_error)");
  CHECK_CONTAINS(what, "counter at 16 refuses");

  auto named = ray::Actor(Counter::FactoryCreate).SetName("cpp-native-counter").Remote(0);
  std::optional<ray::ActorHandle<Counter>> found = ray::GetActor<Counter>("cpp-native-counter");
  CHECK(found.has_value() && found->ID() == named.ID());
  CHECK(*found->Task(&Counter::Add).Remote(2).Get() == 2);
  named.Kill();
  what = CHECK_THROWS(RayActorException, named.Task(&Counter::Get).Remote().Get());
  CHECK_CONTAINS(what, "Actor");
}

struct Case {
  std::string name;
  std::function<void()> run;
  bool only_when_named = false;
};

const std::vector<Case> CASES = {
    {"seed_examples", SeedExamples},
    {"every_value_kind", EveryValueKind},
    {"values_python_makes", ValuesPythonMakes},
    {"get_with_timeout", GetWithTimeout},
    {"wait", Wait},
    {"python_function_args", PythonFunctionArgs},
    {"python_actor", PythonActor},
    {"python_exception_with_traceback", PythonExceptionWithTraceback},
    {"released_with_the_last_handle", ReleasedWithTheLastHandle},
    {"concurrent_calls", ConcurrentCalls},
    {"init_and_shutdown", InitAndShutdown},
    {"java_calls", JavaCalls, true},
    {"cpp_tasks", CppTasks, true},
    {"cpp_actors", CppActors, true},
};

}  // namespace

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  std::vector<std::string> selected;
  for (int i = 1; i < argc; i++) {
    const std::string arg = argv[i];
    if (arg == "--list") {
      for (const auto &c : CASES) std::cout << c.name << "\n";
      return 0;
    }
    if (arg.rfind("--scratch=", 0) == 0) {
      g_scratch = arg.substr(10);
    } else if (arg.rfind("--", 0) != 0) {
      selected.push_back(arg);
    }
  }
  if (g_scratch.empty()) {
    std::cerr << "give --scratch=DIR (an empty directory)\n";
    return 2;
  }
  g_config.ray_namespace = "cpp-tests";
  ray::Init(g_config, argc, argv);
  int failed = 0;
  for (const auto &[name, run, only_when_named] : CASES) {
    const bool named = std::find(selected.begin(), selected.end(), name) != selected.end();
    if (selected.empty() ? only_when_named : !named) continue;
    const auto start = std::chrono::steady_clock::now();
    try {
      run();
      const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
      std::cout << "PASS " << name << " (" << took.count() << " s)" << std::endl;
    } catch (const std::exception &e) {
      failed++;
      std::cout << "FAIL " << name << ": " << e.what() << std::endl;
    }
  }
  ray::Shutdown();
  return failed ? 1 : 0;
}
