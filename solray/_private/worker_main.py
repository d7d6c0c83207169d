"""Entry point of a worker process, started by its node.

A worker connects to its node, registers, and then runs the tasks owners push
to it until the node goes away. It dies with its node: if the node's
connection closes (or the node process dies, via PR_SET_PDEATHSIG), the
worker exits at once, whatever it was running. Under memory pressure the
kernel kills a worker before its node (services.WORKER_OOM_SCORE_ADJ).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import sys
import traceback

from solray._private import context, services
from solray._private.core_worker import CoreWorker
from solray._private.executor import Executor, TaskOutput
from solray._private.protocol import Msg
from solray._private.runtime_env.spec import RUNTIME_ENV_VARIABLE


def main(token: bytes) -> None:
    """Run as a worker until the node goes away. The token comes from the
    caller (a pipe the node passed, or the zygote's memory), never from the
    environment: every task and its subprocesses see the worker's."""
    services.die_with_parent()
    services.set_oom_score_adj(services.WORKER_OOM_SCORE_ADJ)
    cw = CoreWorker(
        is_driver=False,
        token=token,
        node_address=os.environ["SOLRAY_NODE_ADDRESS"],
        worker_id=os.environ["SOLRAY_WORKER_ID"],
    )
    context.core_worker = cw
    # `breakpoint()` in a task waits for `solray debug`, as in Ray (unless
    # the user chose another hook, or PYTHONBREAKPOINT=0).
    os.environ.setdefault("PYTHONBREAKPOINT", "solray.util.rpdb.set_trace")
    setup = os.environ.get(RUNTIME_ENV_VARIABLE)
    if setup:
        cw.runtime_env, cw.setup_error = apply_runtime_env(json.loads(setup))
    executor = Executor(cw)
    cw.executor = executor
    sys.stdout = TaskOutput(sys.stdout, cw)
    sys.stderr = TaskOutput(sys.stderr, cw)

    def node_lost():
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)

    cw.on_node_lost = node_lost
    cw.start(
        {
            Msg.PUSH_TASK: executor.on_push,
            Msg.PUSH_ACTOR_CREATE: executor.on_actor_create,
            Msg.PUSH_ACTOR_TASK: executor.on_actor_task,
            Msg.ACTOR_SHUTDOWN: executor.on_actor_shutdown,
            Msg.GENERATOR_ACK: executor.on_generator_ack,
            Msg.CANCEL_TASK: cw.on_cancel_request,
            Msg.STEAL_TASKS: executor.on_steal,
        }
    )
    signal.signal(signal.SIGINT, executor.interrupts.on_sigint)
    # That handler raises only at an interrupt point: safe while the main
    # thread runs the loop's callbacks (event_loop.py).
    cw.loop.defer_sigint = False
    executor.run_forever()


def apply_runtime_env(setup: dict) -> tuple[dict, str | None]:
    """A worker of a runtime env: its import path first, then its
    worker_process_setup_hook. Returns (the env, the hook's traceback if it
    raised): the node fails the env's requests with it."""
    sys.path[:0] = setup["sys_path"]
    hook = setup.get("setup_hook")
    try:
        if isinstance(hook, dict):
            with open(hook["file"], "rb") as f:
                pickle.loads(f.read())()
        elif hook:
            module, _, name = hook.rpartition(".")
            getattr(importlib.import_module(module), name)()
    except BaseException:
        return setup["env"], (
            f"worker_process_setup_hook {hook if isinstance(hook, str) else hook['name']} "
            f"raised:\n{traceback.format_exc()}"
        )
    return setup["env"], None


if __name__ == "__main__":
    main(services.read_token(int(sys.argv[1])))
