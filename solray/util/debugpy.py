"""`ray.util.ray_debugpy` (Ray's `ray.util.debugpy`): the names are here, so
code that imports them works; the debugger is not.

Ray's version makes the worker listen for a debugpy (VS Code) client on a
TCP port of the node's address. A debugger runs any code it is sent, and
debugpy can only listen on TCP, where any user of the machine (with Ray's
address, anyone on the network) can connect: solray does not open one. Use
`util.pdb` and `solray debug` instead, which attach through a Unix socket
only this user can reach. So, without debugpy installed, these functions
raise ImportError (Ray logs an error and returns: solray does not let a
breakpoint pass silently); with it, NotImplementedError saying why.
"""

from __future__ import annotations

import importlib.util

POST_MORTEM_ERROR_UUID = "post_mortem_error_uuid"


def _refuse() -> None:
    if importlib.util.find_spec("debugpy") is None:
        raise ImportError(
            "util.ray_debugpy needs the debugpy module: pip install debugpy (or use "
            "solray.util.pdb.set_trace() and `solray debug`)"
        )
    raise NotImplementedError(
        "util.ray_debugpy: solray does not open debugpy's TCP port, which anyone who can reach "
        "it could use to run code in the worker; use solray.util.pdb.set_trace() and "
        "`solray debug`, which attach through a Unix socket only this user can reach"
    )


def set_trace(breakpoint_uuid: str | None = None) -> None:
    """Ray's debugpy breakpoint: refused (see the module's header)."""
    _refuse()


def _post_mortem() -> None:
    """Ray's debugpy post-mortem hook: refused (see the module's header)."""
    _refuse()
