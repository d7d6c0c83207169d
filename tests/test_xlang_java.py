"""Java tasks and actors: from a Python driver (ray.cross_language) and from a
foreign driver (test_xlang's protocol-only client), run in the JVM child of
a Python worker.

They need the solray Java runtime jar (java/, built offline with Maven): the
`java_runtime` fixture uses SOLRAY_TEST_JAVA_JAR if set (.ci/run passes the
jar it built), else builds java/ once per session. The user's Java classes
are compiled here with javac.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import numpy as np
import psutil
import pytest
from conftest import wait_for_condition
from test_client import head  # noqa: F401  (a fixture)
from test_xlang import GET_ACTOR, Client, Refused, token_of

import solray
from solray import cross_language
from solray.exceptions import CrossLanguageError, RayTaskError
from solray.job_config import JobConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAVA_DIR = os.path.join(REPO, "java")
RUNTIME_JAR = os.path.join(JAVA_DIR, "runtime", "target", "solray-java.jar")
BUILD_TIMEOUT_S = 600

SOURCES = {
    "xlangtest/Calc.java": """
        package xlangtest;

        import java.util.List;
        import java.util.Map;

        public class Calc {
            public static int add(int a, int b) { return a + b; }
            public static String greet(String name) { return "hello " + name; }
            public static int divide(int a, int b) { return a / b; }
            public static List<Object> echo(List<Object> items) { return items; }
            public static Object lookup(Map<String, Object> m, String k) { return m.get(k); }
            public static long[] squares(long[] xs) {
                long[] out = new long[xs.length];
                for (int i = 0; i < xs.length; i++) out[i] = xs[i] * xs[i];
                return out;
            }
            public static int total(int[] xs) { int t = 0; for (int x : xs) t += x; return t; }
            public static double[] scale(double[] xs, double k) {
                double[] out = new double[xs.length];
                for (int i = 0; i < xs.length; i++) out[i] = xs[i] * k;
                return out;
            }
        }
    """,
    "xlangtest/Counter.java": """
        package xlangtest;

        public class Counter {
            private long value;
            public Counter(long start) { value = start; }
            public long increment(long by) { value += by; return value; }
            public long pid() { return ProcessHandle.current().pid(); }
            public void fail() { throw new IllegalStateException("counter broke"); }
        }
    """,
}


@pytest.fixture(scope="session")
def java_runtime() -> str:
    """The solray Java runtime jar (holding io.solray.runtime.JavaExecutor)."""
    given = os.environ.get("SOLRAY_TEST_JAVA_JAR")
    if given:
        return given
    if not os.path.isdir(JAVA_DIR):
        pytest.skip("no java/ in this tree: the Java runtime cannot be built")
    out = subprocess.run(
        ["mvn", "-o", "-q", "-f", os.path.join(JAVA_DIR, "pom.xml"), "package", "-DskipTests"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return RUNTIME_JAR


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory) -> str:
    """The user's Java classes, compiled into a folder on the code_search_path."""
    root = tmp_path_factory.mktemp("java-src")
    classes = tmp_path_factory.mktemp("java-classes")
    files = []
    for name, text in SOURCES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        files.append(str(path))
    out = subprocess.run(
        ["javac", "-d", str(classes), *files], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return str(classes)


@pytest.fixture(scope="module")
def java_cluster(java_runtime, java_classes):
    """A local cluster whose driver's job has the classes and runtime on its path."""
    solray.init(
        num_cpus=2,
        job_config=JobConfig(code_search_path=[java_classes, java_runtime], jvm_options=["-Xss1m"]),
    )
    yield
    solray.shutdown()
    wait_for_condition(lambda: not psutil.Process().children(recursive=True), timeout=15)


def test_java_functions_from_python(java_cluster):
    add = cross_language.java_function("xlangtest.Calc", "add")
    assert solray.get(add.remote(1, 2)) == 3
    greet = cross_language.java_function("xlangtest.Calc", "greet")
    assert solray.get(greet.options(name="greeting").remote("solray")) == "hello solray"
    echo = cross_language.java_function("xlangtest.Calc", "echo")
    assert solray.get(echo.remote([1, "a", None, b"x", 2.5, [True]])) == [
        1,
        "a",
        None,
        b"x",
        2.5,
        [True],
    ]
    lookup = cross_language.java_function("xlangtest.Calc", "lookup")
    assert solray.get(lookup.remote({"k": [1, 2]}, "k")) == [1, 2]
    scaled = solray.get(
        cross_language.java_function("xlangtest.Calc", "scale").remote(np.array([1.0, 2.5]), 2.0)
    )
    assert scaled.dtype == np.float64 and np.array_equal(scaled, [2.0, 5.0])
    squares = cross_language.java_function("xlangtest.Calc", "squares")
    squared = solray.get(squares.remote(np.array([3, -4, 2**31], dtype=np.int64)))
    assert squared.dtype == np.int64 and squared.tolist() == [9, 16, 2**62]
    total = cross_language.java_function("xlangtest.Calc", "total")
    assert solray.get(total.remote(np.arange(5, dtype=np.int32))) == 10
    # A ref argument is resolved first, as for any task.
    assert solray.get(add.remote(solray.put(40), add.remote(1, 1))) == 42


def test_java_exceptions_are_ray_task_errors_with_the_java_stack(java_cluster):
    divide = cross_language.java_function("xlangtest.Calc", "divide")
    with pytest.raises(RayTaskError) as info:
        solray.get(divide.remote(1, 0))
    error = info.value
    assert isinstance(error, CrossLanguageError)  # as_instanceof_cause: except works
    assert error.cause.type_name == "java.lang.ArithmeticException"
    assert error.cause.language == "java" and "/ by zero" in error.cause.message
    assert "at xlangtest.Calc.divide" in str(error)
    missing = cross_language.java_function("xlangtest.Calc", "nope")
    with pytest.raises(RayTaskError, match="nope"):
        solray.get(missing.remote())
    with pytest.raises(TypeError, match="no cross-language form"):
        try:
            solray.get(cross_language.java_function("xlangtest.Calc", "echo").remote([{1, 2}]))
        except RayTaskError as e:
            raise e.cause from None


def test_java_actors_from_python(java_cluster):
    Counter = cross_language.java_actor_class("xlangtest.Counter")
    counter = Counter.options(name="java-counter").remote(10)
    assert solray.get(counter.increment.remote(5)) == 15
    again = solray.get_actor("java-counter")
    assert solray.get(again.increment.remote(1)) == 16
    with pytest.raises(RayTaskError) as info:
        solray.get(counter.fail.remote())
    assert info.value.cause.type_name == "java.lang.IllegalStateException"
    assert "counter broke" in str(info.value)
    assert solray.get(counter.increment.remote(0)) == 16  # the actor lives on
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=4).remote(0)
    solray.kill(counter)


def test_the_jvm_dies_with_its_worker(java_cluster):
    counter = cross_language.java_actor_class("xlangtest.Counter").remote(0)
    jvm = psutil.Process(solray.get(counter.pid.remote()))
    worker_pid = solray.get(counter.__ray_call__.remote(lambda _: os.getpid()))
    assert jvm.ppid() == worker_pid and "java" in jvm.name()
    os.kill(worker_pid, signal.SIGKILL)
    wait_for_condition(lambda: not jvm.is_running() or jvm.status() == psutil.STATUS_ZOMBIE)


def test_a_java_actor_dies_with_its_jvm_and_restarts(java_cluster):
    counter = cross_language.java_actor_class("xlangtest.Counter").options(max_restarts=1)
    counter = counter.remote(10)
    assert solray.get(counter.increment.remote(1)) == 11
    jvm = psutil.Process(solray.get(counter.pid.remote()))
    jvm.kill()
    jvm.wait(10)
    # The actor's worker exits with it; the restarted actor has a new JVM
    # and its constructor's state.
    wait_for_condition(lambda: _restarted(counter, jvm.pid), timeout=60)
    assert solray.get(counter.increment.remote(1)) == 11


def _restarted(counter, old_jvm: int) -> bool:
    try:
        return solray.get(counter.pid.remote()) != old_jvm
    except solray.exceptions.RayActorError:
        return False


def test_a_foreign_driver_calls_java(head, java_runtime, java_classes):  # noqa: F811
    c = Client(head.client_address, token_of(head))
    try:
        c.connect(language="java", code_search_path=[java_classes, java_runtime])
        calc = {"language": "java", "class_name": "xlangtest.Calc"}
        [total] = c.task({**calc, "name": "add"}, 20, 22)
        [failed] = c.task({**calc, "name": "divide"}, 1, 0)
        assert c.get1(total) == 42
        record = c.get1(failed)["error"]
        assert record["type"] == "RayTaskError" and record["language"] == "java"
        assert record["cause_type"] == "java.lang.ArithmeticException"
        assert "at xlangtest.Calc.divide" in record["traceback"]
        counter = {"language": "java", "class_name": "xlangtest.Counter"}
        actor_id = c.actor(counter, 1, name="jc")
        assert c.get1(c.call(actor_id, "increment", 2)[0]) == 3
        reply, _ = c.request(GET_ACTOR, {"name": "jc", "namespace": None})
        assert reply == {"actor_id": actor_id, "class": counter}
        with pytest.raises(Refused, match="max_concurrency"):
            c.actor(counter, 1, max_concurrency=2)
    finally:
        c.close()
    wait_for_condition(lambda: not head.proxies(), timeout=30)
