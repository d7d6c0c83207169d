"""solray's C++ API (cpp/): built once per session with CMake, its test
program (cpp/tests/api_tests.cc) and the Objects page's example run against a
head started with `solray start --head` (test_client's `head` fixture), as a
C++ driver on another machine would: given only the client server's
HOST:PORT (RAY_ADDRESS) and a copy of the token (SOLRAY_TOKEN_FILE). The
Python the program calls is cpp_api_targets.py, in this directory, which it
names as its code_search_path.

The program runs all its cases in one process (one connection, one proxy);
each case is a test here, so a failure names its case. Its java_calls,
cpp_tasks and cpp_actors cases run alone, with the Java classes
(test_xlang_java's) or the build folder (solray_cpp_worker,
libsolray_test_functions.so) on the code_search_path; C++ functions and
actors are called from Python here too. Skipped, saying why, where cmake, a
C++ compiler or the Debian packages (libmsgpack-cxx-dev, libssl-dev) are
missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading

import numpy as np
import psutil
import pytest
from conftest import wait_for_condition
from test_client import client_env, head  # noqa: F401  (head: a fixture)
from test_cluster_cli import cli_env
from test_xlang_java import java_classes, java_runtime  # noqa: F401  (fixtures)

import solray
from solray import cross_language
from solray._private import protocol, transport
from solray.exceptions import CrossLanguageError, RayTaskError
from solray.job_config import JobConfig

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CPP_DIR = os.path.join(os.path.dirname(TESTS_DIR), "cpp")
BUILD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 300

# The program's cases (`api_tests --list`; test_the_case_list_is_the_programs).
CASES = [
    "seed_examples",
    "every_value_kind",
    "values_python_makes",
    "get_with_timeout",
    "wait",
    "python_function_args",
    "python_actor",
    "python_exception_with_traceback",
    "released_with_the_last_handle",
    "concurrent_calls",
    "init_and_shutdown",
]


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory) -> str:
    """cpp/ built (Debug: the quickest to compile) in a temporary directory."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}: the C++ API is not built")
    build = str(tmp_path_factory.mktemp("cpp-build"))
    configure = subprocess.run(
        ["cmake", "-S", CPP_DIR, "-B", build, "-DCMAKE_BUILD_TYPE=Debug"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if configure.returncode != 0 and re.search(r"msgpack|OpenSSL", configure.stderr):
        pytest.skip(f"libmsgpack-cxx-dev or libssl-dev missing: {configure.stderr[-500:]}")
    assert configure.returncode == 0, configure.stdout + configure.stderr
    compiled = subprocess.run(
        ["cmake", "--build", build, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    return build


def cpp_env(head) -> dict:  # noqa: F811
    env = client_env(head, head.token_file)
    env["RAY_ADDRESS"] = head.client_address
    return env


@pytest.fixture(scope="module")
def cpp_run(cpp_build, head, tmp_path_factory):  # noqa: F811
    """The test program's run: (its output, {case: "PASS" or why it failed})."""
    scratch = tmp_path_factory.mktemp("cpp-scratch")
    out = run_program(cpp_build, head, [], [TESTS_DIR], scratch)
    results = {}
    for line in out.stdout.splitlines():
        if match := re.fullmatch(r"PASS (\w+) \(.*\)", line):
            results[match.group(1)] = "PASS"
        elif match := re.fullmatch(r"FAIL (\w+): (.*)", line):
            results[match.group(1)] = match.group(2)
    return out, results


@pytest.mark.parametrize("case", CASES)
def test_cpp_api(case, cpp_run):
    out, results = cpp_run
    assert case in results, f"{case} did not run (exit {out.returncode}):\n{out.stdout}{out.stderr}"
    assert results[case] == "PASS", results[case]


def test_the_case_list_is_the_programs(cpp_build):
    listed = subprocess.run(
        [os.path.join(cpp_build, "solray_cpp_tests"), "--list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.stdout.split() == [*CASES, "java_calls", "cpp_tasks", "cpp_actors"]


def run_program(cpp_build, head, cases: list[str], search_path: list[str], scratch):  # noqa: F811
    """The test program's run of `cases` (all but the named-only ones if none)."""
    return subprocess.run(
        [
            os.path.join(cpp_build, "solray_cpp_tests"),
            *cases,
            f"--ray_code_search_path={':'.join(search_path)}",
            f"--scratch={scratch}",
        ],
        env=cpp_env(head),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def run_cases(cpp_build, head, cases: list[str], search_path: list[str], scratch) -> None:  # noqa: F811
    """Runs the program's cases that only run when named."""
    out = run_program(cpp_build, head, cases, search_path, scratch)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [line.split()[:2] for line in out.stdout.splitlines()] == [
        ["PASS", case] for case in cases
    ], out.stdout


def test_java_functions_and_actors_from_cpp(cpp_build, head, java_classes, java_runtime, tmp_path):  # noqa: F811
    """The program's java_calls case: Java static methods and a Java actor
    (test_xlang_java's classes), run in a Python worker's JVM child; a Java
    exception with its stack trace."""
    run_cases(cpp_build, head, ["java_calls"], [TESTS_DIR, java_classes, java_runtime], tmp_path)


def test_cpp_tasks_and_actors_from_cpp(cpp_build, head, tmp_path):  # noqa: F811
    """The program's cpp_tasks and cpp_actors cases: RAY_REMOTE functions and
    a class (remote_functions.cc) run in a C++ executor that a Python worker
    starts with the build folder's libsolray_test_functions.so; C++
    exceptions; a function RAY_REMOTE did not register; a named C++ actor
    found again, killed."""
    run_cases(cpp_build, head, ["cpp_tasks", "cpp_actors"], [TESTS_DIR, cpp_build], tmp_path)


def test_cpp_functions_and_actors_from_python(cpp_build, leak_check):
    """ray.cross_language.cpp_function and cpp_actor_class from a Python
    driver: the same C++ executor, started by the worker that runs the task,
    gone with it."""
    solray.init(num_cpus=1, job_config=JobConfig(code_search_path=[cpp_build]))
    plus = cross_language.cpp_function("Plus")
    assert solray.get(plus.remote(solray.put(40), plus.remote(1, 1))) == 42
    scale = cross_language.cpp_function("Scale")
    scaled = solray.get(scale.remote(np.array([1.5, -2.0]), 2))
    assert scaled.dtype == np.float64 and scaled.tolist() == [3.0, -4.0]
    executors = [
        p for p in psutil.Process().children(recursive=True) if "solray_cpp_worker" in p.name()
    ]
    assert len(executors) == 1 and executors[0].cmdline()[1:] == [
        os.path.join(cpp_build, "libsolray_test_functions.so")
    ]
    with pytest.raises(RayTaskError) as info:
        solray.get(cross_language.cpp_function("Divide").remote(1, 0))
    assert isinstance(info.value.cause, CrossLanguageError)
    assert info.value.cause.type_name == "std::invalid_argument"
    assert info.value.cause.language == "cpp"
    assert info.value.cause.message == "Divide: division by zero"
    with pytest.raises(RayTaskError, match="no C\\+\\+ remote function Nope .*RAY_REMOTE"):
        solray.get(cross_language.cpp_function("Nope").remote())
    counter = cross_language.cpp_actor_class("Counter::FactoryCreate", "Counter").remote(5)
    assert solray.get(getattr(counter, "Counter::Add").remote(2)) == 7
    with pytest.raises(RayTaskError) as info:
        solray.get(getattr(counter, "Counter::Fail").remote())
    assert info.value.cause.type_name == "std::runtime_error"
    assert info.value.cause.message == "counter at 7 refuses"
    # The executor dying fails the call in flight, saying so; the next call
    # gets a new one.
    with pytest.raises(
        RayTaskError, match="the C\\+\\+ executor closed its output; it exited with code 3"
    ):
        solray.get(cross_language.cpp_function("Crash").remote(3))
    assert solray.get(plus.remote(2, 2)) == 4
    # Arguments are checked where they are read (a C++ caller's at compile time).
    with pytest.raises(RayTaskError, match="cannot read a Python str as int32_t"):
        solray.get(plus.remote("one", 2))
    with pytest.raises(RayTaskError, match="Plus takes 2 argument\\(s\\), not 1"):
        solray.get(plus.remote(1))
    solray.shutdown()


def test_cpp_functions_need_the_executor_on_the_code_search_path(tmp_path, leak_check):
    solray.init(num_cpus=1, job_config=JobConfig(code_search_path=[str(tmp_path)]))
    with pytest.raises(RayTaskError, match="solray_cpp_worker, built with cpp/.* is in no folder"):
        solray.get(cross_language.cpp_function("Plus").remote(1, 2))
    solray.shutdown()


def test_the_client_s_proxy_ends_with_the_program(cpp_run, head):  # noqa: F811
    out, _ = cpp_run
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for_condition(lambda: not head.proxies(), timeout=30)


def test_the_objects_page_example_runs(cpp_build, head):  # noqa: F811
    """cpp/examples/objects.cc: the page's C++ code, with a main (the README's
    second command)."""
    out = subprocess.run(
        [os.path.join(cpp_build, "objects_example")],
        env=cpp_env(head),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "objects example: ok\n"
    wait_for_condition(lambda: not head.proxies(), timeout=30)


def test_a_server_of_another_version_is_refused_naming_both(cpp_build):
    """The client checks the server's version before proving the token: to a
    server greeting with another solray version it sends its own version and
    no proof (as transport.py's client does), and fails naming both."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)  # the thread ends even if the program never connects
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            greeting = transport.version_block(solray_version="0.0.9")
            conn.sendall(transport.MAGIC + greeting + os.urandom(transport.NONCE_LEN))
            while chunk := conn.recv(4096):
                received.extend(chunk)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        env = cli_env()
        env["SOLRAY_TOKEN"] = "00ff"
        env["RAY_ADDRESS"] = f"127.0.0.1:{server.getsockname()[1]}"
        out = subprocess.run(
            [os.path.join(cpp_build, "objects_example")],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    finally:
        thread.join(timeout=30)
        server.close()
    assert out.returncode != 0
    assert (
        f"Version mismatch: {env['RAY_ADDRESS']} runs solray 0.0.9 (protocol "
        f"{protocol.PROTOCOL_VERSION}), this C++ client was built for solray "
        f"{solray.__version__} (protocol {protocol.PROTOCOL_VERSION})"
    ) in out.stderr
    digest_and_nonce = bytes(transport.DIGEST_LEN + transport.NONCE_LEN)
    assert bytes(received) == transport.version_block() + digest_and_nonce
