"""`log_once`: Ray's helper for warnings that should appear once per process
(or once per period, after `enable_periodic_logging()`)."""

from __future__ import annotations

import time

_PERIOD_S = 60.0
_logged: dict[str, float] = {}  # key -> when log_once last said yes
_disabled = False
_periodic = False


def log_once(key: str) -> bool:
    """True the first time it is called with `key` in this process (and, with
    periodic logging on, again once a minute); False otherwise, and always
    after `disable_log_once_globally()`."""
    if _disabled:
        return False
    now = time.monotonic()
    last = _logged.get(key)
    if last is not None and not (_periodic and now - last >= _PERIOD_S):
        return False
    _logged[key] = now
    return True


def disable_log_once_globally() -> None:
    """Make log_once() return False in this process."""
    global _disabled
    _disabled = True


def enable_periodic_logging() -> None:
    """Make log_once() return True again for a key once a minute has passed."""
    global _periodic
    _periodic = True
