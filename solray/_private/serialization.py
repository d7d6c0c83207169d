"""Values to bytes and back: pickle protocol 5 with out-of-band buffers.

A serialized object is a pickle stream plus the out-of-band buffers pickle 5
hands us (numpy arrays, bytes-like payloads), plus flags (is it an error?).
Over the wire these travel as separate frame buffers; in shared memory they are
laid out as

    header   magic, flags, data length, buffer count, (offset, length) per buffer
    data     the pickle stream, 64-byte aligned
    buffers  each 64-byte aligned

so a reader rebuilds numpy arrays directly on the mapped memory: zero-copy, and
read-only because the views handed to pickle are read-only.

ObjectRefs met while pickling are collected into the thread's current
`RefCollector`, so whatever keeps the value can keep the refs it contains,
and the value is flagged FLAG_REFS. Reading such a value counts the refs it
makes together at the end (`unpickling`), not one by one as each is made.

Everything solray pickles with cloudpickle (values, functions, actor classes,
errors) goes through `dumps`, whose pickler keeps code objects whole: since
cloudpickle 3.1.3 its own reducer renames every code object's file to
`<dynamic-code>`, and a remote traceback would lose the user's file, line and
source text. A code object holds only constants marshal can write (nested code
included), so marshal carries it exactly, file name and line table too.
"""

from __future__ import annotations

import io
import marshal
import math
import pickle
import struct
import sys
import threading
import types
from collections import ChainMap

import cloudpickle

from solray._private import context

FLAG_ERROR = 1
# The value is a plain numpy array: `data` pickles (dtype, shape, order) and
# the one buffer is its bytes (`_array_parts`). Pickle's own path costs
# about four times as much per array to read (two global lookups, a dtype
# rebuilt from its state, a Python-level reshape), which a get of many
# stored arrays paid per value.
FLAG_NDARRAY = 2
# The pickle holds ObjectRefs: deserialize() counts those it makes together
# (a value of thousands of refs takes the counter's lock once); any other
# value skips that bookkeeping.
FLAG_REFS = 4
ALIGN = 64
_HEADER = struct.Struct("<4sIQI")
_BUF = struct.Struct("<QQ")
MAGIC = b"SRO1"


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class SerializedObject:
    __slots__ = ("data", "buffers", "flags", "contained_refs")

    def __init__(self, data, buffers=(), flags: int = 0, contained_refs=()):
        self.data = data
        self.buffers = list(buffers)
        self.flags = flags
        self.contained_refs = contained_refs

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    def inline_size(self) -> int:
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def store_size(self) -> int:
        pos = _align(_HEADER.size + _BUF.size * len(self.buffers))
        pos = _align(pos + len(self.data))
        for b in self.buffers:
            pos = _align(pos + memoryview(b).nbytes)
        return max(pos, ALIGN)

    def write_to(self, dest: memoryview) -> None:
        """Lay the object out in `dest` (store_size() bytes, writable)."""
        n = len(self.buffers)
        _HEADER.pack_into(dest, 0, MAGIC, self.flags, len(self.data), n)
        pos = _align(_HEADER.size + _BUF.size * n)
        dest[pos : pos + len(self.data)] = self.data
        pos = _align(pos + len(self.data))
        for i, b in enumerate(self.buffers):
            mv = memoryview(b).cast("B")
            _BUF.pack_into(dest, _HEADER.size + _BUF.size * i, pos, mv.nbytes)
            dest[pos : pos + mv.nbytes] = mv
            pos = _align(pos + mv.nbytes)

    def wire_buffers(self) -> list:
        return [self.data, *self.buffers]

    @classmethod
    def from_wire(cls, flags: int, buffers: list) -> SerializedObject:
        return cls(buffers[0], buffers[1:], flags)

    @classmethod
    def read_from(cls, src: memoryview) -> SerializedObject:
        """View an object laid out by write_to; no bytes are copied."""
        magic, flags, data_len, n = _HEADER.unpack_from(src, 0)
        if magic != MAGIC:
            raise ValueError("corrupt object in the store (bad magic)")
        pos = _align(_HEADER.size + _BUF.size * n)
        data = src[pos : pos + data_len]
        buffers = []
        for i in range(n):
            off, length = _BUF.unpack_from(src, _HEADER.size + _BUF.size * i)
            buffers.append(src[off : off + length])
        return cls(data, buffers, flags)


class RefCollector:
    """Collects the ObjectRefs pickled while it is active on this thread."""

    _local = threading.local()

    def __init__(self):
        self.refs: list = []

    def __enter__(self):
        self._prev = getattr(self._local, "current", None)
        self._local.current = self
        return self

    def __exit__(self, *exc):
        self._local.current = self._prev

    @classmethod
    def note(cls, ref) -> None:
        current = getattr(cls._local, "current", None)
        if current is not None:
            current.refs.append(ref)


# Per thread: the ObjectRefs the innermost running deserialize() has made,
# not counted yet (object_ref._rebuild appends to it). Counting them all at
# the end takes the reference counter's lock once per value, not once per
# ref; the list holds each instance until then, so none can be
# garbage-collected (and uncounted) before it was counted.
unpickling = threading.local()


def _reduce_code(code: types.CodeType):
    return marshal.loads, (marshal.dumps(code),)


# Reducers registered in this process with `util.register_serializer`, by
# class. Per process, as in Ray: a value pickled here carries its
# deserializer (pickled by value if need be), so readers need no registration.
custom_reducers: dict[type, object] = {}


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap(
        custom_reducers, {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
    )


def dumps(value, buffer_callback=None) -> bytes:
    """cloudpickle (protocol 5) that keeps code objects' file names."""
    with io.BytesIO() as out:
        _Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(value)
        return out.getvalue()


def dumps_with_buffers(value, flags: int = 0) -> SerializedObject:
    buffers: list = []

    def take_buffer(pb: pickle.PickleBuffer):
        try:
            buffers.append(pb.raw())
        except BufferError:  # not contiguous: keep it in-band
            return True
        return False

    with RefCollector() as collector:
        data = dumps(value, buffer_callback=take_buffer)
    if collector.refs:
        flags |= FLAG_REFS
    return SerializedObject(data, buffers, flags, collector.refs)


_PLAIN = frozenset((int, float, str, bytes, bool, type(None)))
_CONTAINERS = frozenset((tuple, list, dict))
# A call without arguments, as `serialize(((), {}))` pickles it.
NO_ARGUMENTS = pickle.dumps(((), {}), protocol=5)


def _is_plain(value, depth: int = 0) -> bool:
    """Builtin scalars, and small lists/tuples/dicts of them: the C pickler
    handles these exactly as cloudpickle would, several times faster."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind not in _CONTAINERS or depth > 2 or len(value) > 16:
        return False
    if not value:  # most calls: no arguments, `((), {})`
        return True
    if kind is dict:
        for k in value:
            if type(k) not in _PLAIN:
                return False
        value = value.values()
    for v in value:
        if type(v) not in _PLAIN and not _is_plain(v, depth + 1):
            return False
    return True


def serialize(value) -> SerializedObject:
    if _is_plain(value) and not custom_reducers:
        return SerializedObject(pickle.dumps(value, protocol=5))
    parts = _array_parts(value)
    if parts is not None:
        return SerializedObject(pickle.dumps(parts[0], protocol=5), [parts[1]], FLAG_NDARRAY)
    return dumps_with_buffers(value)


def _array_parts(value):
    """((dtype string, shape, order), its bytes) of a numpy array whose type,
    dtype and layout those say exactly: an ndarray (no subclass) of numbers,
    booleans or strings, contiguous, not empty. None for anything else
    (pickle takes it)."""
    np = sys.modules.get("numpy")  # not imported: it cannot be an array
    if np is None or type(value) is not np.ndarray or custom_reducers or not value.size:
        return None
    dtype = value.dtype
    # Numbers, booleans and strings (datetimes export no buffer; objects,
    # records and subarrays do not round-trip through their dtype string).
    if dtype.kind not in _ARRAY_KINDS or dtype.subdtype is not None or dtype.metadata is not None:
        return None
    if value.flags.c_contiguous:
        order = "C"
    elif value.flags.f_contiguous:
        order = "F"
    else:
        return None
    return (dtype.str, value.shape, order), pickle.PickleBuffer(value).raw()


_ARRAY_KINDS = frozenset("biufcSU")
_dtypes: dict[str, object] = {}  # dtype string -> numpy dtype


def _dtype(dtype_str: str):
    dtype = _dtypes.get(dtype_str)
    if dtype is None:
        import numpy as np

        dtype = _dtypes[dtype_str] = np.dtype(dtype_str)
    return dtype


def _array(obj: SerializedObject):
    """The array a FLAG_NDARRAY object holds, on its buffer (read-only, as
    pickle's arrays are: zero-copy on the store's memory)."""
    data = obj.data
    dtype, shape, order, _ = _array_spec(data if type(data) is bytes else bytes(data))
    buffer = obj.buffers[0]
    if type(buffer) is not memoryview or not buffer.readonly:
        buffer = memoryview(buffer).toreadonly()
    # (Positional: numpy parses keyword arguments at twice the cost.)
    return sys.modules["numpy"].ndarray(shape, dtype, buffer, 0, None, order)


_streams: dict[int, struct.Struct] = {}  # stream length -> the Struct that reads it as bytes
_array_specs: dict[bytes, tuple] = {}  # FLAG_NDARRAY stream -> (dtype, shape, order, nbytes)
# A FLAG_NDARRAY object's layout: the header and its one buffer's place,
# then the stream.
_ARRAY_HEADER = struct.Struct(_HEADER.format + _BUF.format[1:])
_ARRAY_STREAM = _align(_ARRAY_HEADER.size)


def _array_spec(data: bytes) -> tuple:
    """(dtype, shape, order, bytes the array needs) of a FLAG_NDARRAY
    object's stream, looked up: it is unpickled once per shape."""
    spec = _array_specs.get(data)
    if spec is None:
        if len(_array_specs) >= 1024:  # (as many shapes as values: keep it bounded)
            _array_specs.clear()
        dtype_str, shape, order = pickle.loads(data)
        dtype = _dtype(dtype_str)  # (numpy is imported once this returns)
        spec = _array_specs[data] = (dtype, shape, order, math.prod(shape) * dtype.itemsize)
    return spec


def stored_array(arena, offset: int, size: int):
    """The plain numpy array the FLAG_NDARRAY object at `offset` (of `size`
    bytes) in the store holds, made in place: `arena` is the store's memory,
    read-only (`ArenaMapping.readonly`). None if the object holds anything
    else (`SerializedObject.read_from` reads it).

    A get of many stored arrays pays this per value, so it is short: the
    (dtype, shape, order) stream is read as bytes and looked up, not
    unpickled (a fourth of the cost), and the array is made directly on the
    arena, with no memoryview or array of bytes in between."""
    magic, flags, length, _, start, nbytes = _ARRAY_HEADER.unpack_from(arena, offset)
    if not flags & FLAG_NDARRAY or magic != MAGIC:
        return None
    stream = _streams.get(length)
    if stream is None:
        stream = _streams[length] = struct.Struct(f"{length}s")
    dtype, shape, order, array_bytes = _array_spec(
        stream.unpack_from(arena, offset + _ARRAY_STREAM)[0]
    )
    if array_bytes > nbytes or start + nbytes > size:
        return None  # not as written: read_from's checks say what is wrong
    # (Positional arguments: numpy parses keywords at twice the cost.)
    return sys.modules["numpy"].ndarray(shape, dtype, arena, offset + start, None, order)


def serialize_error(error: BaseException) -> SerializedObject:
    try:
        return dumps_with_buffers(error, FLAG_ERROR)
    except Exception as e:  # the error (or its cause) cannot be pickled
        from solray.exceptions import RaySystemError

        return dumps_with_buffers(
            RaySystemError(f"an error that could not be serialized ({e}): {error!r}"), FLAG_ERROR
        )


def deserialize(obj: SerializedObject):
    """The value, or for an error object the exception (not raised)."""
    if obj.flags & FLAG_NDARRAY:
        return _array(obj)
    buffers = [memoryview(b).toreadonly() for b in obj.buffers]
    if not obj.flags & FLAG_REFS:
        return pickle.loads(obj.data, buffers=buffers)
    outer = getattr(unpickling, "refs", None)  # (a __setstate__ may get() in turn)
    made = unpickling.refs = []
    try:
        return pickle.loads(obj.data, buffers=buffers)
    finally:
        unpickling.refs = outer
        if made:
            worker = context.core_worker or context.client
            if worker is not None:
                worker.add_refs(made)
