"""Actors leak nothing: however an actor ends, its resources come back at once.

One small cluster (1 CPU and one custom `slot`) serves the module; each test
starts and must end with all of it free. Each test ends an actor one
way (kill before or after its constructor ran, with or without a restart,
restarts exhausted, `exit_actor`, a constructor that raises, the last handle
dropped, its owner's death) in one placement (plain resources, default
`num_cpus`, a placement group bundle), then checks what a user sees:
`available_resources()` returns to the full amount, and a new actor and a task
needing those resources start. Every constructor run appends its pid to a file
(a side channel that holds no resource), so a restart beyond `max_restarts`,
or a constructor run for an actor already killed, fails the test; that count
is read only after the new actor started, past the point where such a run
would have been placed.

Node death is in test_multinode.py (it needs several nodes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import wait_for_condition, wait_for_file

import solray as ray
from solray.exceptions import ActorDiedError, RayActorError
from solray.util.placement_group import placement_group, remove_placement_group
from solray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from solray.util.state import list_actors

GET_TIMEOUT_S = 60
SHARED_CLUSTER = {"num_cpus": 1, "resources": {"slot": 1}}
NODE = {"CPU": 1.0, "slot": 1.0}


@pytest.fixture
def node(shared_cluster):
    """The node's resources are all free when a test starts, and must be when
    it ends. A test that leaves some held has failed; the cluster is then
    started afresh, so that leak fails that test, not every test after it."""
    wait_for_free(NODE)
    yield
    try:
        wait_for_free(NODE)
    except AssertionError:
        ray.shutdown()
        ray.init(**SHARED_CLUSTER)
        raise


@ray.remote
class Probe:
    """Appends its pid to `log` each time its constructor runs; then waits for
    `go` (if given) and raises if `fail`."""

    def __init__(self, log: str, go: str | None = None, fail: bool = False):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        if go is not None:
            wait_for_file(go, timeout=120)
        if fail:
            raise ValueError("the constructor failed")

    def pid(self) -> int:
        return os.getpid()

    def quit(self) -> None:
        ray.actor.exit_actor()


@ray.remote(num_cpus=0)
class Parent:
    """Owns a Probe it creates (an owner that is a worker, not the driver)."""

    def make(self, options: dict, log: str):
        self.child = Probe.options(**options).remote(log)
        return self.child

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
def released(path: str) -> str:
    wait_for_file(path, timeout=120)
    return "ready"


class Placement:
    """Where the actors of a test run: `options` for the Probe, and the
    resources that must all be free again once it is gone."""

    def __init__(self, options: dict, free: dict):
        self.options = options
        self.free = free


@pytest.fixture(params=["num_cpus", "default_num_cpus", "bundle"])
def placement(node, request):
    """num_cpus: holds the CPU and the slot while it runs. default_num_cpus:
    needs the CPU only to be placed, holds the slot. bundle: num_cpus=1 and
    the slot, drawn from a placement group bundle holding both."""
    if request.param == "num_cpus":
        yield Placement({"num_cpus": 1, "resources": {"slot": 1}}, NODE)
    elif request.param == "default_num_cpus":
        yield Placement({"resources": {"slot": 1}}, NODE)
    else:
        pg = placement_group([{"CPU": 1, "slot": 1}])
        assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
        free = {f"CPU_group_0_{pg.id}": 1.0, f"slot_group_0_{pg.id}": 1.0}
        yield Placement(
            {"num_cpus": 1, "resources": {"slot": 1}, "scheduling_strategy": strategy}, free
        )
        remove_placement_group(pg)


# -- helpers -----------------------------------------------------------------


def wait_for_free(expected: dict) -> None:
    def free() -> dict:
        available = ray.available_resources()
        return {k: available.get(k, 0.0) for k in expected}

    wait_for_condition(
        lambda: free() == expected,
        timeout=30,
        message=lambda: f"free resources {free()} != {expected}",
    )


def constructor_runs(log) -> list[int]:
    return [int(pid) for pid in log.read_text().split()] if log.exists() else []


def actor_row(actor) -> dict:
    (row,) = list_actors(filters=[("actor_id", "=", actor._actor_id.hex())], detail=True)
    return row


def process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def call_pid(actor) -> int:
    return ray.get(actor.pid.remote(), timeout=GET_TIMEOUT_S)


def restarted_pid(actor, old_pid: int) -> int:
    """Calls until one reaches a new instance; returns its pid. (Calls made
    before the caller noticed the old process is gone fail: no retries.)"""
    pids = []

    def new_instance() -> bool:
        pids.append(call_pid(actor))
        return pids[-1] != old_pid

    wait_for_condition(new_instance, timeout=GET_TIMEOUT_S, message="the actor never restarted")
    return pids[-1]


def wait_dead(actor) -> None:
    def dead() -> bool:
        try:
            call_pid(actor)
        except RayActorError:
            return True
        return False

    wait_for_condition(dead, timeout=GET_TIMEOUT_S, message="calls still reach the actor")
    wait_for_condition(lambda: actor_row(actor)["state"] == "DEAD", timeout=GET_TIMEOUT_S)


def assert_everything_given_back(placement: Placement, tmp_path) -> None:
    """The user's view: all of the placement's resources are free, and a new
    actor, then a task, needing them start (one at a time: each needs all)."""
    wait_for_free(placement.free)
    log = tmp_path / "newcomer"
    newcomer = Probe.options(**placement.options).remote(str(log))
    assert call_pid(newcomer) == constructor_runs(log)[0]
    ray.kill(newcomer)
    wait_for_free(placement.free)

    @ray.remote
    def needs_them():
        return "ran"

    task_options = dict(placement.options, num_cpus=1)
    assert ray.get(needs_them.options(**task_options).remote(), timeout=GET_TIMEOUT_S) == "ran"
    wait_for_free(placement.free)


# -- kill ----------------------------------------------------------------------


def test_kill_after_constructor(placement, tmp_path):
    log = tmp_path / "runs"
    actor = Probe.options(**placement.options).remote(str(log))
    pid = call_pid(actor)
    ray.kill(actor)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [pid]
    assert process_gone(pid)


def test_kill_with_restart_then_kill_again(placement, tmp_path):
    """The issue's case: a restart, then no restarts left."""
    log = tmp_path / "runs"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log))
    first = call_pid(actor)
    ray.kill(actor, no_restart=False)
    second = restarted_pid(actor, first)
    ray.kill(actor, no_restart=False)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [first, second]
    row = actor_row(actor)
    assert (row["state"], row["num_restarts"]) == ("DEAD", 1)


def test_kill_with_restart_twice_in_a_row(placement, tmp_path):
    """The second kill finds the actor restarting (placing or constructing):
    it ends that attempt too, and with no restarts left the actor is dead."""
    log = tmp_path / "runs"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log))
    first = call_pid(actor)
    ray.kill(actor, no_restart=False)
    ray.kill(actor, no_restart=False)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log)[0] == first and len(constructor_runs(log)) <= 2
    row = actor_row(actor)
    assert (row["state"], row["num_restarts"]) == ("DEAD", 1)


def test_kill_while_constructor_runs(placement, tmp_path):
    log, go = tmp_path / "runs", tmp_path / "go"
    actor = Probe.options(**placement.options).remote(str(log), str(go))
    wait_for_condition(lambda: constructor_runs(log), timeout=GET_TIMEOUT_S)
    ray.kill(actor)
    wait_dead(actor)
    go.touch()  # a constructor run that should not happen would not block
    assert_everything_given_back(placement, tmp_path)
    assert len(constructor_runs(log)) == 1


def test_kill_with_restart_while_constructor_runs(placement, tmp_path):
    """Killed in its constructor with a restart left: the constructor runs
    again (and finishes: `go` exists by then); killed again, it is dead."""
    log, go = tmp_path / "runs", tmp_path / "go"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log), str(go))
    wait_for_condition(lambda: constructor_runs(log), timeout=GET_TIMEOUT_S)
    ray.kill(actor, no_restart=False)
    go.touch()
    wait_for_condition(lambda: len(constructor_runs(log)) == 2, timeout=GET_TIMEOUT_S)
    second = constructor_runs(log)[1]
    assert restarted_pid(actor, constructor_runs(log)[0]) == second
    ray.kill(actor, no_restart=False)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert len(constructor_runs(log)) == 2
    assert actor_row(actor)["num_restarts"] == 1


def test_kill_while_waiting_for_a_constructor_argument(placement, tmp_path):
    log, go = tmp_path / "runs", tmp_path / "go"
    argument = released.remote(str(go))
    actor = Probe.options(**placement.options).remote(str(log), argument)
    ray.kill(actor)
    go.touch()
    assert ray.get(argument, timeout=GET_TIMEOUT_S) == "ready"
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == []


def test_kill_while_waiting_for_resources(placement, tmp_path):
    """An actor killed while another holds what it needs never starts, and
    the holder's resources go to the next actor, not to the dead one. (The
    kill may find its lease request still on the way to the node or queued
    there: nothing shows which, and both must free everything.)"""
    holder_log, log = tmp_path / "holder", tmp_path / "runs"
    holder = Probe.options(**placement.options).remote(str(holder_log))
    holder_pid = call_pid(holder)
    waiting = Probe.options(**placement.options).remote(str(log))
    ray.kill(waiting)
    wait_dead(waiting)
    ray.kill(holder)
    wait_dead(holder)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == []
    assert constructor_runs(holder_log) == [holder_pid]


def test_kill_with_restart_while_waiting_for_resources(placement, tmp_path):
    """kill(no_restart=False) before the constructor ran uses up a restart
    (as in Ray); the actor starts once the resources are free, once."""
    holder_log, log = tmp_path / "holder", tmp_path / "runs"
    holder = Probe.options(**placement.options).remote(str(holder_log))
    call_pid(holder)
    waiting = Probe.options(max_restarts=1, **placement.options).remote(str(log))
    ray.kill(waiting, no_restart=False)
    assert actor_row(waiting)["state"] == "RESTARTING"
    ray.kill(holder)
    pid = call_pid(waiting)
    assert constructor_runs(log) == [pid]
    ray.kill(waiting, no_restart=False)  # no restarts left
    wait_dead(waiting)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [pid]
    assert actor_row(waiting)["num_restarts"] == 1


# -- the actor's process ends ------------------------------------------------------


def test_restarts_exhausted(placement, tmp_path):
    log = tmp_path / "runs"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log))
    first = call_pid(actor)
    os.kill(first, signal.SIGKILL)
    second = restarted_pid(actor, first)
    os.kill(second, signal.SIGKILL)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [first, second]
    row = actor_row(actor)
    assert (row["state"], row["num_restarts"]) == ("DEAD", 1)


def test_exit_actor(placement, tmp_path):
    log = tmp_path / "runs"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log))
    pid = call_pid(actor)
    with pytest.raises(ActorDiedError):
        ray.get(actor.quit.remote(), timeout=GET_TIMEOUT_S)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [pid]  # not restarted, max_restarts or not


def test_constructor_raises(placement, tmp_path):
    log = tmp_path / "runs"
    actor = Probe.options(max_restarts=1, **placement.options).remote(str(log), fail=True)
    with pytest.raises(ActorDiedError, match="the constructor failed"):
        call_pid(actor)
    wait_dead(actor)
    assert_everything_given_back(placement, tmp_path)
    assert len(constructor_runs(log)) == 1  # not restarted, max_restarts or not


# -- nobody holds it any more ------------------------------------------------------


def test_last_handle_dropped(placement, tmp_path):
    log = tmp_path / "runs"
    actor = Probe.options(**placement.options).remote(str(log))
    pid = call_pid(actor)
    del actor
    wait_for_condition(lambda: process_gone(pid), timeout=GET_TIMEOUT_S)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [pid]


def test_last_handle_dropped_while_constructor_runs(placement, tmp_path):
    log, go = tmp_path / "runs", tmp_path / "go"
    actor = Probe.options(**placement.options).remote(str(log), str(go))
    wait_for_condition(lambda: constructor_runs(log), timeout=GET_TIMEOUT_S)
    del actor
    go.touch()
    (pid,) = constructor_runs(log)
    wait_for_condition(lambda: process_gone(pid), timeout=GET_TIMEOUT_S)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [pid]


def test_owner_worker_dies(placement, tmp_path):
    """A non-detached actor fate-shares with the worker that created it."""
    log = tmp_path / "runs"
    parent = Parent.remote()
    child = ray.get(parent.make.remote(placement.options, str(log)), timeout=GET_TIMEOUT_S)
    child_pid = call_pid(child)
    os.kill(call_pid(parent), signal.SIGKILL)
    wait_dead(child)
    wait_for_condition(lambda: process_gone(child_pid), timeout=GET_TIMEOUT_S)
    assert_everything_given_back(placement, tmp_path)
    assert constructor_runs(log) == [child_pid]


OWNER_DRIVER = """
import os, sys
import solray

solray.init(address=sys.argv[1])

@solray.remote(num_cpus=1, resources={"slot": 1}, max_restarts=1)
class Held:
    def pid(self):
        return os.getpid()

held = Held.remote()
print(solray.get(held.pid.remote(), timeout=60), flush=True)
sys.stdin.readline()
"""


def test_owner_driver_dies(node, tmp_path):
    """A second driver that created an actor is SIGKILLed: its actor ends
    (restarts left or not) and the node has everything free again."""
    address = ray.get_runtime_context().gcs_address
    with subprocess.Popen(
        [sys.executable, "-c", OWNER_DRIVER, address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as driver:
        line = driver.stdout.readline()
        assert line.strip().isdigit(), f"the second driver did not start its actor: {line!r}"
        actor_pid = int(line)
        assert not process_gone(actor_pid)
        driver.send_signal(signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
    wait_for_condition(lambda: process_gone(actor_pid), timeout=GET_TIMEOUT_S)
    plain = Placement({"num_cpus": 1, "resources": {"slot": 1}}, NODE)
    assert_everything_given_back(plain, tmp_path)
    (row,) = [r for r in list_actors(detail=True) if r["class_name"] == "Held"]
    assert (row["state"], row["num_restarts"]) == ("DEAD", 0)


# -- placement group bundles ---------------------------------------------------------


def test_default_actor_in_a_bundle_holds_no_cpu_while_running(node, tmp_path):
    """As on a node: a default actor needs the bundle's CPU to be placed, not
    to run, so a task needing that CPU runs beside it."""
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    in_bundle = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    log = tmp_path / "runs"
    actor = Probe.options(scheduling_strategy=in_bundle).remote(str(log))
    call_pid(actor)
    wait_for_free({f"CPU_group_0_{pg.id}": 1.0})

    @ray.remote(num_cpus=1)
    def needs_the_bundle_cpu():
        return "ran"

    ref = needs_the_bundle_cpu.options(scheduling_strategy=in_bundle).remote()
    assert ray.get(ref, timeout=GET_TIMEOUT_S) == "ran"
    ray.kill(actor)
    remove_placement_group(pg)


def test_actor_in_a_group_not_placed_yet_starts_once_it_is(node, tmp_path):
    """An actor created in a placement group that cannot be placed yet waits
    for it, starts once the group is placed, and gives its bundle back."""
    holder = Probe.options(num_cpus=1).remote(str(tmp_path / "holder"))
    call_pid(holder)
    pg = placement_group([{"CPU": 1, "slot": 1}])
    in_bundle = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    log = tmp_path / "runs"
    actor = Probe.options(num_cpus=1, scheduling_strategy=in_bundle).remote(str(log))
    assert not pg.wait(timeout_seconds=0.5)  # the holder has the node's CPU
    ray.kill(holder)
    pid = call_pid(actor)
    assert constructor_runs(log) == [pid]
    ray.kill(actor)
    wait_for_free({f"CPU_group_0_{pg.id}": 1.0, f"slot_group_0_{pg.id}": 1.0})
    remove_placement_group(pg)


def test_actors_in_a_removed_group_end(node, tmp_path):
    """Removing a group ends its actors for good, restarts left or not (as
    in Ray: a restart could never be placed), running or still waiting."""
    pg = placement_group([{"CPU": 1, "slot": 1}])
    assert pg.wait(timeout_seconds=GET_TIMEOUT_S)
    in_bundle = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    options = {"num_cpus": 1, "resources": {"slot": 1}, "scheduling_strategy": in_bundle}
    running_log, waiting_log = tmp_path / "running", tmp_path / "waiting"
    running = Probe.options(max_restarts=-1, **options).remote(str(running_log))
    pid = call_pid(running)
    waiting = Probe.options(max_restarts=-1, **options).remote(str(waiting_log))
    remove_placement_group(pg)
    for actor in (running, waiting):
        wait_dead(actor)
        with pytest.raises(ActorDiedError, match="placement group was removed"):
            call_pid(actor)
    wait_for_condition(lambda: process_gone(pid), timeout=GET_TIMEOUT_S)
    assert_everything_given_back(
        Placement({"num_cpus": 1, "resources": {"slot": 1}}, NODE), tmp_path
    )
    assert constructor_runs(running_log) == [pid]
    assert constructor_runs(waiting_log) == []
