"""Values between a ray:// client and its proxy: one frame's body and buffers.

A value is pickled with its out-of-band buffers (serialization.py), so large
arrays cross as frame buffers, not copied into msgpack. The body lists the
ids of the refs and actor handles pickled inside (each time one was met):
the proxy holds each of them for the client until the client releases it
(proxy.py, client_worker.py).
"""

from __future__ import annotations

from solray._private import serialization
from solray._private.serialization import FLAG_ERROR, SerializedObject


def pack(value) -> tuple[dict, list, list]:
    """(body, buffers, refs pickled inside) for a value."""
    obj = serialization.dumps_with_buffers(value)
    return _body(obj), obj.wire_buffers(), obj.contained_refs


def pack_error(error: BaseException) -> tuple[dict, list, list]:
    """The same for an exception the receiver raises."""
    obj = serialization.serialize_error(error)
    return _body(obj), obj.wire_buffers(), obj.contained_refs


def _body(obj: SerializedObject) -> dict:
    return {"flags": obj.flags, "refs": [ref._id for ref in obj.contained_refs]}


def unpack(body: dict, buffers: list):
    """(value, is_error) of a packed value: an error is returned, not raised."""
    obj = SerializedObject.from_wire(body["flags"], buffers)
    return serialization.deserialize(obj), bool(body["flags"] & FLAG_ERROR)
