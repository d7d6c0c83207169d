"""`import ray` answered by solray, for programs run with `solray run`.

A Ray program moves over without edits when every `ray...` import it makes
(in the driver, in the processes it spawns, in solray's workers running its
functions) yields solray's module of the same name. The alias is a meta path
finder, not a copy: `ray.util` IS `solray.util` (one module object, in
sys.modules under both names), so module state, classes and `isinstance`
checks are shared, and pickles name `solray...`, so workers never need the
alias to load what a driver sends.

Nothing named `ray` is installed where Python looks by default: the package
`solray/_ray_shim/ray` is importable as `ray` only in processes whose path
holds `solray/_ray_shim`, which `solray run` puts on PYTHONPATH (so child
processes inherit it) and which drivers pass on to their workers with the
rest of their `sys.path`. A program that really has Ray installed and is not
started by `solray run` keeps getting Ray.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys

# Ray's module names whose solray counterpart is named otherwise.
RENAMED = {"ray": "solray"}


def shim_path() -> str:
    """The directory that makes `import ray` find the shim package."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_ray_shim")


def solray_name(name: str) -> str:
    return RENAMED.get(name, "solray" + name[len("ray") :])


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `ray.X` as the already-imported module `solray.X`."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("ray."):
            return None
        target_name = solray_name(fullname)
        try:
            importlib.import_module(target_name)
        except ModuleNotFoundError as e:
            if e.name != target_name:
                raise
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: solray has no {target_name!r} (see the README's "
                "'Coming from Ray' for what differs)",
                name=fullname,
            ) from None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        # The existing module object: importlib keeps its own __name__ and
        # __spec__, since they are already set.
        return sys.modules[solray_name(spec.name)]

    def exec_module(self, module) -> None:
        pass  # already executed as solray's


def install() -> None:
    """Make `ray` and every `ray.X` resolve to solray's modules."""
    import solray

    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
    sys.modules["ray"] = solray
