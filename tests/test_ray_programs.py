"""`solray run`: a program written for Ray runs on solray without edits, in
every Python process it starts, with a `ray` command on its PATH."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import solray

RAY_PROGRAM = textwrap.dedent(
    """
    import multiprocessing
    import subprocess
    import sys

    import ray
    from ray.exceptions import RayTaskError
    from ray.util import ActorPool


    def in_pool_child(address):
        import ray  # a spawned interpreter: it imports ray on its own

        ray.init(address=address)

        @ray.remote
        def square(x):
            return x * x

        value = ray.get(square.remote(7))
        ray.shutdown()
        return value


    @ray.remote
    class Doubler:
        def double(self, x):
            return 2 * x


    @ray.remote
    def fails():
        raise ValueError("boom")


    if __name__ == "__main__":
        context = ray.init(num_cpus=2)
        address = context.address_info["address"]
        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        print("ACTOR POOL", sorted(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])))
        try:
            ray.get(fails.remote())
        except RayTaskError as e:
            print("CAUGHT", isinstance(e, ValueError), "boom" in str(e))
        with multiprocessing.get_context("spawn").Pool(2) as processes:
            print("SPAWNED", processes.map(in_pool_child, [address, address]))
        child = subprocess.run(
            [sys.executable, "-c", "import ray, ray.util.state; print(ray.is_initialized())"],
            capture_output=True, text=True, check=True,
        )
        print("SUBPROCESS IMPORTED RAY", child.stdout.strip())
        status = subprocess.run(
            ["ray", "status", "--address", address], capture_output=True, text=True, check=True
        )
        print("RAY STATUS", "1 alive node(s)" in status.stdout)
        ray.shutdown()
    """
)


def test_a_ray_program_runs_unchanged_with_solray_run(leak_check, tmp_path):
    script = tmp_path / "ray_program.py"
    script.write_text(RAY_PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLRAY_")}
    run = subprocess.run(
        [sys.executable, "-m", "solray.cli", "run", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ACTOR POOL [2, 4, 6]" in run.stdout
    assert "CAUGHT True True" in run.stdout
    assert "SPAWNED [49, 49]" in run.stdout
    assert "SUBPROCESS IMPORTED RAY False" in run.stdout
    assert "RAY STATUS True" in run.stdout, run.stdout + run.stderr


def test_ray_is_one_module_with_solray_under_solray_run(tmp_path):
    probe = (
        "import ray, solray, ray.util.placement_group as a, solray.util.placement_group as b\n"
        "from ray.exceptions import GetTimeoutError\n"
        "import solray.exceptions\n"
        "print(ray is solray, a is b, GetTimeoutError is solray.exceptions.GetTimeoutError)\n"
        "try:\n"
        "    import ray.no_such_module\n"
        "except ModuleNotFoundError as e:\n"
        "    print('MISSING', e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "solray.cli", "run", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "True True True" in run.stdout
    assert "MISSING No module named 'ray.no_such_module': solray has no" in run.stdout


def test_solray_installs_no_ray_module(tmp_path):
    """Outside `solray run`, `import ray` is not solray: nothing named ray was installed."""
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util as u; s = u.find_spec('ray'); print(s and s.origin)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert run.returncode == 0, run.stderr
    found = run.stdout.strip()  # None, or a real Ray installed by someone else
    package = os.path.dirname(os.path.abspath(solray.__file__))
    assert found == "None" or not found.startswith(package), found


def test_solray_run_needs_a_program():
    run = subprocess.run(
        [sys.executable, "-m", "solray.cli", "run"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "give a script to run" in run.stderr
