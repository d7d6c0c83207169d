"""Advice on anti-patterns, as a user meets it: a program on a real cluster
does one of Ray's documented anti-patterns, and at its shutdown() the
driver's stderr names it once, with its count and this file's line that did
it, and the fix. A clean program gets no advice; SOLRAY_ANTI_PATTERN_ADVICE=0
turns it off. (The dashboard's Advice view: test_dashboard.py.)

Each anti-pattern line below is marked with a comment `# <- name`; the test
finds its line number by that mark, so the expected call site is exactly
the line that did it.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

import solray as ray
from solray._private import context
from solray._private.protocol import Msg

HERE = os.path.relpath(__file__)
SUMMARY = "solray: advice:"


def line_of(mark: str) -> int:
    with open(__file__) as f:
        [line] = [i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# <- {mark}")]
    return line


def summary_after_shutdown(capfd) -> str:
    """shutdown(), then what the driver printed to stderr from the summary on."""
    capfd.readouterr()
    ray.shutdown()
    err = capfd.readouterr().err
    assert err.count(SUMMARY) <= 1, err  # printed once
    return err[err.index(SUMMARY) :] if SUMMARY in err else ""


def finding(summary: str, title: str) -> str:
    """The lines of one anti-pattern in the summary."""
    match = re.search(rf"^  {re.escape(title)}.*?(?=^  \S|\Z)", summary, re.M | re.S)
    assert match, summary
    return match.group(0)


@ray.remote
def quick(x=None):
    return 1


@ray.remote
def returns_put():
    return ray.put(1)


@ray.remote
def child():
    return 2


@ray.remote
def returns_child_ref():
    return child.remote()


@pytest.fixture
def cluster(leak_check):
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_get_right_after_remote_in_a_loop(cluster, capfd):
    for i in range(25):
        assert ray.get(quick.remote(i)) == 1  # <- get-loop
    summary = summary_after_shutdown(capfd)
    lines = finding(summary, "get() right after remote(), in a loop")
    assert ": 25 gets" in lines
    assert f"{HERE}:{line_of('get-loop')}  get of quick(): 25" in lines
    assert "fix: submit all the tasks first, then get() the list once" in lines
    # 25 tiny calls of that line are not "in bulk": no tiny-task advice.
    assert "shorter than 1 ms" not in summary


def test_tiny_tasks_in_bulk(cluster, capfd):
    refs = [quick.remote(i) for i in range(300)]  # <- tiny
    assert sum(ray.get(refs)) == 300
    summary = summary_after_shutdown(capfd)
    lines = finding(summary, "tasks shorter than 1 ms, in bulk")
    assert ": 300 calls" in lines
    assert f"{HERE}:{line_of('tiny')}  quick: 300 (300 of 300 calls" in lines
    assert "fix: batch the work" in lines
    assert "get() right after remote()" not in summary  # one get of the list


def test_returning_put_refs(cluster, capfd):
    for _ in range(3):
        assert ray.get(ray.get(returns_put.remote())) == 1  # <- put-refs
    # A child task's ref returned is fine: not counted.
    for _ in range(3):
        assert ray.get(ray.get(returns_child_ref.remote())) == 2

    @ray.remote
    class Actor:
        def bad(self):
            return ray.put(np.zeros(10))

    actor = Actor.remote()
    assert ray.get(ray.get(actor.bad.remote())).shape == (10,)  # <- actor-put-refs
    summary = summary_after_shutdown(capfd)
    lines = finding(summary, "tasks returned refs they made with put()")
    assert ": 4 calls" in lines
    assert f"{HERE}:{line_of('put-refs')}  returns_put: 3" in lines
    assert f"{HERE}:{line_of('actor-put-refs')}  bad: 1" in lines
    assert "returns_child_ref" not in summary
    assert "fix: return the value itself" in lines


def test_the_same_large_argument_by_value(cluster, capfd):
    large = np.zeros(1024 * 1024 // 8)  # 1 MiB
    refs = [quick.remote(large) for _ in range(6)]  # <- large-arg
    ray.get(refs)
    # New arrays each time are not "the same argument", though they may
    # reuse the memory (and id) of one that died: not counted.
    for _ in range(6):
        ray.get(quick.remote(np.ones(1024 * 1024 // 8)))
    summary = summary_after_shutdown(capfd)
    lines = finding(summary, "the same large argument passed by value")
    assert ": 5 repeated calls" in lines
    assert f"{HERE}:{line_of('large-arg')}  quick: 5 (5.0 MiB serialized again)" in lines
    assert "fix: ray.put() it once and pass the ref" in lines
    assert lines.count(HERE) == 1


def test_nested_tasks_report_to_the_drivers_summary(cluster, capfd):
    @ray.remote
    def parent():
        return sum(ray.get(quick.remote(i)) for i in range(12))  # <- nested-get-loop

    assert ray.get(parent.remote()) == 12
    summary = summary_after_shutdown(capfd)
    lines = finding(summary, "get() right after remote(), in a loop")
    assert f"{HERE}:{line_of('nested-get-loop')}  get of quick(): 12" in lines


def test_a_clean_program_gets_no_advice(cluster, capfd):
    @ray.remote
    def work(data, i):
        time.sleep(0.005)  # long enough not to be a tiny task
        return int(data[i])

    data = ray.put(np.arange(1000))
    refs = [work.remote(data, i) for i in range(150)]
    assert ray.get(refs) == list(range(150))
    assert ray.get(quick.remote()) == 1  # one get after one remote: not a loop
    assert summary_after_shutdown(capfd) == ""


def test_the_setting_turns_it_off(leak_check, capfd, monkeypatch):
    monkeypatch.setenv("SOLRAY_ANTI_PATTERN_ADVICE", "0")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        for _ in range(20):
            ray.get(ray.get(returns_put.remote()))
        ray.get([quick.remote() for _ in range(200)])
        cw = context.core_worker
        # Nothing was recorded or reported anywhere.
        assert cw.request("control", Msg.GET_ADVICE, {"job": None}) == {"jobs": []}
        assert not cw.advice.pending
    finally:
        summary = summary_after_shutdown(capfd)
    assert summary == ""


def test_a_bad_setting_is_refused(leak_check, monkeypatch):
    monkeypatch.setenv("SOLRAY_ANTI_PATTERN_ADVICE", "off")
    with pytest.raises(ValueError, match="SOLRAY_ANTI_PATTERN_ADVICE must be 0 .* got 'off'"):
        ray.init(num_cpus=1, include_dashboard=False)
    assert not ray.is_initialized()
