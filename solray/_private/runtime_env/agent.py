"""On a node: what a worker of a runtime env is started with.

`RuntimeEnvAgent.prepare(env)` turns a resolved env (`spec.py`,
`resolve.py`) into a `WorkerLaunch`: the interpreter (a cached virtual
environment for `pip`/`uv`, else the node's), the environment variables
(`env_vars` over the node's), the working directory and import path
(unpacked `working_dir` and `py_modules`), and the setup hook. Each piece is
built once per node and shared by every env that needs it: a package is
unpacked once (`packages.unpack`), a requirement set's virtual environment is
created once, under `<session>/runtime_resources/<node>/`. Concurrent
requests for the same piece wait on the one build in progress; a failed
build is not remembered, so a later request tries again. While an env is
being prepared, `preparing` says since when and which step runs (what
`solray why` tells of the tasks waiting for its workers).

Virtual environments see the node's own packages (solray, numpy, ...):
a `.pth` file adds the node's site-packages folders behind the venv's own,
so a requirement already there is not installed again, and one that is
pinned to another version in the env wins in it. `pip` runs as the node's
`python -m pip --python <venv>`, `uv` as `uv pip install --python <venv>`.

The loop owns the tables; file and process work runs in threads and
subprocesses. `config.setup_timeout_seconds` bounds a whole preparation; a
timeout or a failure is a RuntimeEnvSetupError carrying what went wrong
(pip's own output, for a bad requirement).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import site
import sys
import sysconfig
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from solray._private.runtime_env import packages
from solray._private.runtime_env.spec import DEFAULT_CONFIG, env_hash
from solray.exceptions import RuntimeEnvSetupError

OUTPUT_TAIL = 4000  # characters of a failed install's output kept in the error
COMPLETE = ".solray-complete"


@dataclass
class WorkerLaunch:
    """How to start a worker of one env."""

    python: str = sys.executable
    env_vars: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    sys_path: list[str] = field(default_factory=list)
    setup_hook: object = None  # "module.function", or {"file": pickle's path, "name": ...}


class RuntimeEnvAgent:
    def __init__(self, cache_root: str, fetch: Callable[[str], Awaitable[bytes]]):
        self.cache_root = cache_root
        self._fetch = fetch  # sha256 -> package bytes, from the control store
        self._builds: dict[str, asyncio.Future] = {}  # piece key -> its result
        # For `solray why`: env key -> {"since": time.time(), "step": what
        # it is doing}, while a preparation of that env is in progress.
        self.preparing: dict[str, dict] = {}

    async def prepare(self, env: dict) -> WorkerLaunch:
        timeout = (env.get("config") or DEFAULT_CONFIG)["setup_timeout_seconds"]
        key = env_hash(env)
        progress = self.preparing.setdefault(key, {"since": time.time(), "step": "starting"})
        progress["count"] = progress.get("count", 0) + 1
        try:
            return await asyncio.wait_for(
                self._prepare(env, progress), None if timeout == -1 else timeout
            )
        except TimeoutError:
            raise RuntimeEnvSetupError(
                f"runtime_env setup did not finish within setup_timeout_seconds={timeout} "
                f"(env: {_describe(env)})"
            ) from None
        finally:
            progress["count"] -= 1
            if not progress["count"]:
                self.preparing.pop(key, None)

    async def _prepare(self, env: dict, progress: dict) -> WorkerLaunch:
        launch = WorkerLaunch(env_vars=dict(env.get("env_vars") or {}))
        if env.get("working_dir"):
            progress["step"] = "working_dir download and unpack"
            launch.cwd = await self._unpacked(env["working_dir"])
            launch.sys_path.append(launch.cwd)
        for uri in env.get("py_modules") or []:
            progress["step"] = "py_modules download and unpack"
            launch.sys_path.append(await self._unpacked(uri))
        for tool in ("pip", "uv"):
            if env.get(tool):
                wanted = env[tool].get("packages") or []
                progress["step"] = f"{tool} install " + " ".join(
                    os.path.basename(p) for p in wanted
                )
                launch.python = await self._venv(tool, env[tool])
        hook = env.get("worker_process_setup_hook")
        if isinstance(hook, dict):  # a pickled callable: the worker loads it from a file
            progress["step"] = "worker_process_setup_hook download"
            hook = {"file": await self._hook_file(hook["pickled"]), "name": hook["name"]}
        launch.setup_hook = hook
        return launch

    async def _hook_file(self, uri: str) -> str:
        digest, _ = packages.split_uri(uri)
        path = os.path.join(self.cache_root, "hooks", f"{digest}.pkl")

        async def build() -> str:
            data = await self._fetch_checked(digest)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            staging = f"{path}.partial"
            with open(staging, "wb") as f:
                f.write(data)
            os.rename(staging, path)
            return path

        if os.path.exists(path):
            return path
        return await self._once(f"hook:{digest}", build)

    async def _once(self, key: str, build: Callable[[], Awaitable[str]]) -> str:
        future = self._builds.get(key)
        if future is None:
            future = self._builds[key] = asyncio.ensure_future(build())
            future.add_done_callback(
                lambda f: self._builds.pop(key, None) if f.cancelled() or f.exception() else None
            )
        return await asyncio.shield(future)

    async def _unpacked(self, uri: str) -> str:
        cache = os.path.join(self.cache_root, "packages")
        folder = packages.unpacked_folder(uri, cache)
        if folder is not None:
            return folder

        async def build() -> str:
            data = await self._fetch_checked(packages.split_uri(uri)[0])
            os.makedirs(cache, mode=0o700, exist_ok=True)
            return await asyncio.to_thread(packages.unpack, uri, cache, data)

        try:
            return await self._once(f"pkg:{uri}", build)
        except (OSError, ValueError) as e:
            raise RuntimeEnvSetupError(f"runtime_env package {uri} could not be set up: {e}") from e

    async def _fetch_checked(self, digest: str) -> bytes:
        """A package's (or a pickled hook's) bytes, checked against its name."""
        data = await self._fetch(digest)
        if hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeEnvSetupError(f"runtime_env package {digest} arrived corrupted")
        return data

    async def _venv(self, tool: str, requirements: dict) -> str:
        text = json.dumps([tool, requirements], sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:24]
        folder = os.path.join(self.cache_root, tool, digest)
        if os.path.exists(os.path.join(folder, COMPLETE)):
            return os.path.join(folder, "bin", "python")
        return await self._once(
            f"{tool}:{digest}", lambda: self._build_venv(tool, requirements, folder)
        )

    async def _build_venv(self, tool: str, requirements: dict, folder: str) -> str:
        # Built in place (installed scripts name the venv's folder), and
        # marked complete last: a folder without the mark is a failed or
        # interrupted build, removed and made again.
        await asyncio.to_thread(shutil.rmtree, folder, True)
        os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
        python = os.path.join(folder, "bin", "python")
        try:
            await _run([sys.executable, "-m", "venv", "--without-pip", folder], "venv")
            await asyncio.to_thread(_see_base_packages, python)
            if requirements["packages"]:
                if tool == "pip":
                    command = [
                        sys.executable, "-m", "pip", "--python", python, "install",
                        "--disable-pip-version-check", "--no-input",
                        *requirements["pip_install_options"], *requirements["packages"],
                    ]  # fmt: skip
                else:
                    command = [
                        *_uv_command(), "pip", "install", "--python", python,
                        *requirements["uv_pip_install_options"], *requirements["packages"],
                    ]  # fmt: skip
                await _run(command, tool)
            if requirements.get(f"{tool}_check"):
                await _run([sys.executable, "-m", "pip", "--python", python, "check"], "pip check")
            with open(os.path.join(folder, COMPLETE), "w"):
                pass
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return python


def _see_base_packages(python: str) -> None:
    """Let the venv import what the node's environment has, behind its own."""
    purelib = _venv_purelib(python)
    folders = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if p]
    lines = [f"import site; site.addsitedir({p!r})" for p in dict.fromkeys(folders)]
    with open(os.path.join(purelib, "_solray_base_environment.pth"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _venv_purelib(python: str) -> str:
    venv = os.path.dirname(os.path.dirname(python))
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    path = os.path.join(venv, "lib", version, "site-packages")
    os.makedirs(path, exist_ok=True)
    return path


def _uv_command() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    import importlib.util

    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise RuntimeEnvSetupError(
        "runtime_env 'uv' needs the uv installer on the node, and it has none: install it "
        "(pip install uv) in the node's environment, or use 'pip'"
    )


async def _run(command: list[str], what: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    try:
        output, _ = await process.communicate()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        text = output.decode(errors="replace")[-OUTPUT_TAIL:]
        raise RuntimeEnvSetupError(
            f"runtime_env {what} failed (exit status {process.returncode}):\n{text}"
        )


def _describe(env: dict) -> str:
    return ", ".join(sorted(k for k in env if k != "config")) or "empty"
