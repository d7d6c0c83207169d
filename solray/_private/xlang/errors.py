"""Errors across languages: the error record foreign peers read, both ways.

A foreign driver reading a failed object gets a record instead of the
pickled exception a Python driver would raise (docs/protocol.md, "Error
record"): the solray/Ray class name a Python driver would see, and for a
RayTaskError the type of the user's exception inside it. A JVM child that
fails a call sends the same record; the Python worker raises it as a
CrossLanguageError, so the task fails as any task does (RayTaskError whose
cause names the Java type and carries the Java stack trace), and a foreign
reader of that error sees the Java type again as its cause_type.
"""

from __future__ import annotations

import traceback as tb

from solray import exceptions


def error_record(error: BaseException) -> dict:
    """The record for an exception a read or a call raised."""
    if isinstance(error, exceptions.RayTaskError):
        cause = error.cause
        if isinstance(cause, exceptions.CrossLanguageError):
            return {
                "type": "RayTaskError",
                "message": cause.message,
                "traceback": error.traceback_str or "",
                "cause_type": cause.type_name,
                "language": cause.language,
            }
        cause_type, message = _last_line(error.traceback_str or "")
        if cause is not None:
            cause_type, message = type(cause).__name__, str(cause)
        return {
            "type": "RayTaskError",
            "message": message,
            "traceback": error.traceback_str or "",
            "cause_type": cause_type,
            "language": "python",
        }
    kind = next(
        (c for c in type(error).__mro__ if c.__module__ == exceptions.__name__), type(error)
    )
    return {
        "type": kind.__name__,
        "message": str(error),
        "traceback": "".join(tb.format_exception(error)) if error.__traceback__ else "",
        "cause_type": None,
        "language": "python",
    }


def _last_line(text: str) -> tuple[str | None, str]:
    """(type, message) from a traceback's last line "module.Type: message"
    (a cause that could not be pickled travels as its traceback text only)."""
    lines = text.rstrip().splitlines()
    if not lines:
        return None, ""
    name, sep, message = lines[-1].partition(": ")
    if not sep or " " in name:
        return None, lines[-1]
    return name.rpartition(".")[2], message


def raised_from(record: dict) -> exceptions.CrossLanguageError:
    """The exception a Python worker raises for a foreign process's error
    record (a JVM call that threw)."""
    return exceptions.CrossLanguageError(
        str(record.get("type") or "UnknownError"),
        str(record.get("message") or ""),
        str(record.get("traceback") or ""),
        str(record.get("language") or "java"),
    )
