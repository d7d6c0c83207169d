"""The cross-language value format: one Python value <-> one msgpack document.

Foreign processes (a Java or C++ driver, a worker's JVM child) cannot read
pickles, so at the edge where a value crosses to one it is converted to this
format, and back on the way in; stored objects stay pickled. The format is
plain msgpack (nil, bool, int up to 64 bits, float64, str, bin, array, map)
plus ext type 1 for typed arrays: numpy arrays both ways, so a Java double[]
arrives in Python as a float64 ndarray and the reverse.

What has no form here (an int beyond 64 bits, a set, an arbitrary object, a
ref inside a value) raises TypeError naming the Python type: the caller turns
it into the error the foreign side sees.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np

EXT_TYPED_ARRAY = 1
# The element types a typed array may hold: numpy's names, which the wire uses.
DTYPES = frozenset(
    ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    + ("float32", "float64")
)


def encode(value) -> bytes:
    """One msgpack document for `value`; TypeError naming what has no form."""
    try:
        return msgpack.packb(value, default=_extended, use_bin_type=True, strict_types=False)
    except OverflowError:
        raise TypeError(
            "a Python int beyond 64 bits has no cross-language form (ints must fit in "
            "int64 or uint64)"
        ) from None
    except ValueError as e:  # msgpack's own limits (depth, sizes)
        raise TypeError(f"this value has no cross-language form: {e}") from None


def _extended(value):
    if isinstance(value, np.ndarray):
        name = value.dtype.name
        if name not in DTYPES:
            raise TypeError(
                f"a numpy array of dtype {name} has no cross-language form (typed arrays "
                f"hold {', '.join(sorted(DTYPES))})"
            )
        data = np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<"), copy=False)
        payload = msgpack.packb([name, list(value.shape), data.tobytes()], use_bin_type=True)
        return msgpack.ExtType(EXT_TYPED_ARRAY, payload)
    if isinstance(value, np.generic) and value.dtype.name in DTYPES:
        return value.item()  # a numpy scalar is its Python number
    from solray.actor import ActorHandle
    from solray.object_ref import ObjectRef

    if isinstance(value, (ObjectRef, ActorHandle)):
        raise TypeError(
            f"a {type(value).__name__} inside a value has no cross-language form (pass refs "
            "as top-level arguments)"
        )
    kind = type(value)
    raise TypeError(
        f"a value of Python type {kind.__module__}.{kind.__qualname__} has no cross-language form"
        if kind.__module__ != "builtins"
        else f"a value of Python type {kind.__qualname__} has no cross-language form"
    )


def decode(data) -> object:
    """The Python value of one msgpack document; ValueError if it is not one."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext, use_list=True)
    except ValueError:
        raise
    except TypeError as e:  # an array as a map key: unhashable in Python
        raise ValueError(f"not a cross-language value: {e}") from None
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"not a cross-language value: {type(e).__name__}: {e}") from None


def _ext(code: int, payload: bytes):
    if code != EXT_TYPED_ARRAY:
        raise ValueError(f"ext type {code} is reserved (only ext 1, a typed array, is defined)")
    try:
        name, shape, data = msgpack.unpackb(payload, raw=False)
    except Exception:
        raise ValueError("a typed array (ext 1) must hold [dtype, shape, data]") from None
    if name not in DTYPES:
        raise ValueError(f"typed array dtype {name!r} is not one of {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"typed array shape must be a list of sizes, got {shape!r}")
    if not isinstance(data, bytes):
        raise ValueError("typed array data must be bin")
    dtype = np.dtype(name)
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise ValueError(
            f"typed array of {name} {shape} needs {math.prod(shape) * dtype.itemsize} bytes, "
            f"got {len(data)}"
        )
    # A copy in native order: a writable array, as a Python value would be.
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
