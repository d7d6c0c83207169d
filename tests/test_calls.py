"""Calls behave as in Ray (issue 12, point 2), on a real local cluster:
`get` of several refs fails fast, `cancel` of a borrowed ref reaches its
owner, call arguments are checked against the signature at `.remote()`,
oversized definitions are refused, the runtime context's getters, futures.
"""

from __future__ import annotations

import pytest
from conftest import wait_for_file

import solray as ray
from solray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError


@ray.remote
def fail():
    raise ValueError("first one failed")


@ray.remote
def hang(path):
    wait_for_file(path, timeout=3600)
    return "released"


def test_get_raises_the_first_error_without_waiting_for_the_rest(ray, tmp_path):
    release = tmp_path / "release"
    hung = hang.remote(str(release))
    # Ray raises as soon as one ref holds an error: the hung task is not waited for.
    with pytest.raises(ValueError, match="first one failed"):
        ray.get([hung, fail.remote()], timeout=60)
    with pytest.raises(RayTaskError):
        ray.get([fail.remote(), hung], timeout=60)
    release.touch()
    assert ray.get(hung, timeout=60) == "released"


@ray.remote
def start_child(path):
    # The ref is owned by this task's worker; the caller only borrows it.
    return [hang.remote(path)]


def test_cancel_of_a_borrowed_ref_reaches_its_owner(ray, tmp_path):
    (child,) = ray.get(start_child.remote(str(tmp_path / "never")))
    with pytest.raises(GetTimeoutError):
        ray.get(child, timeout=0.5)
    ray.cancel(child)
    with pytest.raises(TaskCancelledError):
        ray.get(child, timeout=60)
