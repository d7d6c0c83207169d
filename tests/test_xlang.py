"""Foreign drivers (issue 16): a client written from docs/protocol.md alone.

`Client` below speaks the protocol with plain sockets, hmac and msgpack, as
a Java or C++ client does: it imports nothing of solray's, so these tests
prove the document is enough to write one. It talks to the client server of
a head started with `solray start --head` (test_client's `head` fixture:
one per module), as a foreign driver on another machine would, and the
Python functions and classes it calls live in a module on the job's
code_search_path, which the client names in XLANG_CONNECT.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import re
import socket
import struct
import textwrap

import msgpack
import numpy as np
import pytest
from conftest import wait_for_condition
from test_client import head, listed_objects  # noqa: F401  (head: a fixture)

# -- the client, from docs/protocol.md ---------------------------------------

MAGIC = b"SOLRAY02"
VERSION_LEN = 18  # <H16s: protocol version, solray version padded with NULs
NONCE_LEN = 32
PREFIX = struct.Struct("<IQ")
REPLY, ERROR_REPLY = 1, 2
CONNECT, PUT, GET, WAIT, SUBMIT, CREATE_ACTOR, CALL_ACTOR, RELEASE, GET_ACTOR, KILL = range(
    210, 220
)
# The version this tree speaks, read from its source as the Java and C++
# builds read it (the client proves the doc is enough, not the import).
PROTOCOL_VERSION = int(
    re.search(
        r"(?m)^PROTOCOL_VERSION = (\d+)",
        (pathlib.Path(__file__).parents[1] / "solray/_private/protocol.py").read_text(),
    )[1]
)


class Refused(Exception):
    """An ERROR_REPLY: its body, "TypeName: message"."""


def typed_array(kind: str, shape: list[int], data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([kind, shape, data]))


def encode(value) -> bytes:
    def default(obj):
        if isinstance(obj, np.ndarray):
            return typed_array(
                obj.dtype.name, list(obj.shape), obj.astype(obj.dtype.newbyteorder("<")).tobytes()
            )
        raise TypeError(type(obj))

    return msgpack.packb(value, default=default, use_bin_type=True)


def decode(data: bytes):
    def ext(code, payload):
        assert code == 1, code
        kind, shape, raw = msgpack.unpackb(payload)
        return np.frombuffer(raw, dtype=np.dtype(kind).newbyteorder("<")).reshape(shape)

    return msgpack.unpackb(data, ext_hook=ext, strict_map_key=False)


class Client:
    def __init__(self, address: str, token: bytes, version: bytes | None = None):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        greeting = self._exact(len(MAGIC) + VERSION_LEN + NONCE_LEN)
        assert greeting[: len(MAGIC)] == MAGIC
        server_version = greeting[len(MAGIC) : len(MAGIC) + VERSION_LEN]
        assert struct.unpack_from("<H", server_version)[0] == PROTOCOL_VERSION
        server_nonce = greeting[len(MAGIC) + VERSION_LEN :]
        nonce = os.urandom(NONCE_LEN)
        proof = hmac.new(token, b"client" + server_nonce, hashlib.sha256).digest()
        self.sock.sendall((version or server_version) + proof + nonce)
        answer = self._exact(32)
        assert hmac.compare_digest(
            answer, hmac.new(token, b"server" + nonce, hashlib.sha256).digest()
        )
        self.next_id = 1

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def send(self, msg_type: int, body, buffers=(), request_id: int = 0) -> None:
        header = msgpack.packb(
            [msg_type, request_id, body, [len(b) for b in buffers]], use_bin_type=True
        )
        self.sock.sendall(
            PREFIX.pack(len(header), sum(map(len, buffers))) + header + b"".join(buffers)
        )

    def receive(self) -> tuple[int, int, object, list[bytes]]:
        header_len, payload_len = PREFIX.unpack(self._exact(PREFIX.size))
        msg_type, rid, body, lengths = msgpack.unpackb(
            self._exact(header_len), strict_map_key=False
        )
        payload = self._exact(payload_len)
        buffers, at = [], 0
        for n in lengths:
            buffers.append(payload[at : at + n])
            at += n
        return msg_type, rid, body, buffers

    def request(self, msg_type: int, body, buffers=()) -> tuple[object, list[bytes]]:
        rid, self.next_id = self.next_id, self.next_id + 1
        self.send(msg_type, body, buffers, rid)
        reply_type, reply_id, reply, out = self.receive()
        assert reply_id == rid
        if reply_type == ERROR_REPLY:
            raise Refused(reply)
        assert reply_type == REPLY
        return reply, out

    def close(self) -> None:
        self.sock.close()

    # The calls a driver makes.

    def connect(self, **body) -> dict:
        body = {
            "language": "cpp",
            "namespace": None,
            "code_search_path": [],
            "jvm_options": [],
            **body,
        }
        return self.request(CONNECT, body)[0]

    def put(self, value) -> bytes:
        return self.request(PUT, {}, [encode(value)])[0]["id"]

    def get(self, ids: list[bytes], timeout_ms: int | None = None) -> list:
        """Values, and error records as dicts under "error"; None if it timed out."""
        reply, buffers = self.request(GET, {"ids": ids, "timeout_ms": timeout_ms})
        if reply["timed_out"]:
            assert reply["results"] == [] and buffers == []
            return None
        values = iter(buffers)
        return [
            decode(next(values)) if r["status"] == "ok" else {"error": r["error"]}
            for r in reply["results"]
        ]

    def get1(self, object_id: bytes):
        return self.get([object_id])[0]

    def args(self, args: list) -> tuple[list, list[bytes]]:
        """ARGs and buffers: bytes wrapped in Ref are refs, the rest values."""
        described, buffers = [], []
        for arg in args:
            if isinstance(arg, Ref):
                described.append({"ref": arg.id})
            else:
                described.append({"value": len(buffers)})
                buffers.append(encode(arg))
        return described, buffers

    def task(self, function: dict, *args, **options) -> list[bytes]:
        described, buffers = self.args(list(args))
        body = {"function": function, "args": described, "options": options}
        return self.request(SUBMIT, body, buffers)[0]["ids"]

    def actor(self, cls: dict, *args, **options) -> bytes:
        described, buffers = self.args(list(args))
        body = {"class": cls, "args": described, "options": options}
        return self.request(CREATE_ACTOR, body, buffers)[0]["actor_id"]

    def call(self, actor_id: bytes, method: str, *args, num_returns: int = 1) -> list[bytes]:
        described, buffers = self.args(list(args))
        body = {
            "actor_id": actor_id,
            "method": method,
            "args": described,
            "options": {"num_returns": num_returns},
        }
        return self.request(CALL_ACTOR, body, buffers)[0]["ids"]

    def release(self, ids=(), actor_ids=()) -> None:
        self.send(RELEASE, {"ids": list(ids), "actor_ids": list(actor_ids)})


class Ref:
    def __init__(self, object_id: bytes):
        self.id = object_id


# -- the cluster side ---------------------------------------------------------

FUNCTIONS = '''
import time

import numpy as np
import solray as ray


def add(a, b):
    return a + b


@ray.remote
def describe(array):
    """A typed array arrives as numpy: its dtype, shape, and it doubled."""
    return [str(array.dtype), list(array.shape), array * 2]


def divide(a, b):
    return a / b


def opaque():
    return {1, 2, 3}


def pair(x):
    return x, x + 1


def slow(seconds):
    time.sleep(seconds)
    return "done"


class Counter:
    def __init__(self, start):
        self.value = start

    def incr(self, by):
        self.value += by
        return self.value
'''


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> str:
    """A folder on the cluster's machines holding the module the client calls."""
    folder = tmp_path_factory.mktemp("xlang-code")
    (folder / "xlang_funcs.py").write_text(textwrap.dedent(FUNCTIONS))
    return str(folder)


def fn(name: str) -> dict:
    return {"language": "python", "module": "xlang_funcs", "name": name}


def token_of(head) -> bytes:  # noqa: F811
    with open(head.token_file) as f:
        return bytes.fromhex(f.read().strip())


@pytest.fixture
def client(head, code):  # noqa: F811
    c = Client(head.client_address, token_of(head))
    c.connect(code_search_path=[code], namespace="xlang")
    yield c
    c.close()
    wait_for_condition(lambda: not head.proxies(), timeout=30)


# -- tests --------------------------------------------------------------------


def test_connect_put_get_every_kind_of_value(head, code):  # noqa: F811
    c = Client(head.client_address, token_of(head))
    try:
        info = c.connect(language="java", code_search_path=[code])
        assert len(bytes.fromhex(info["job_id"])) == 4 and info["namespace"]
        assert len(bytes.fromhex(info["node_id"])) > 0 and info["solray_version"]
        assert len(head.proxies()) == 1
        kinds = [
            None,
            True,
            False,
            0,
            -(2**63),
            2**64 - 1,
            1.5,
            float("inf"),
            "text ü",
            b"\x00\xffbytes",
            [1, [2, "three"], []],
            {"a": 1, 2: [b"x"], "nested": {"k": None}},
        ]
        ids = [c.put(value) for value in kinds]
        assert c.get(ids) == kinds
        # A float32 on the wire is read as a float.
        f32 = c.request(PUT, {}, [b"\xca" + struct.pack(">f", 0.5)])[0]["id"]
        assert c.get1(f32) == 0.5
        # Typed arrays, every element type, any shape: Python reads numpy.
        for kind in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float32",
            "float64",
        ):
            array = (
                (np.arange(6) % 2 == 1 if kind == "bool" else np.arange(6))
                .astype(kind)
                .reshape(2, 3)
            )
            [result] = c.task(fn("describe"), array)
            dtype, shape, doubled = c.get1(result)
            assert (dtype, shape) == (kind, [2, 3])
            expected = array * 2  # bool doubles to int64, as in numpy
            assert doubled.dtype == expected.dtype and np.array_equal(doubled, expected)
            back = c.get1(c.put(array))
            assert back.dtype == np.dtype(kind) and np.array_equal(back, array)
    finally:
        c.close()
    # Disconnecting ends its proxy driver.
    wait_for_condition(lambda: not head.proxies(), timeout=30)


def test_a_value_with_no_cross_language_form_is_an_error_naming_its_type(client):
    [ref] = client.task(fn("opaque"))
    [record] = [r["error"] for r in client.get([ref])]
    assert record["type"] == "TypeError" and "set" in record["message"], record
    assert record["language"] == "python" and record["cause_type"] is None
    # A reserved ext type or bytes that are not msgpack: refused, connection alive.
    with pytest.raises(Refused, match="ValueError: .*ext type 5 is reserved"):
        client.request(PUT, {}, [msgpack.packb(msgpack.ExtType(5, b"x"))])
    with pytest.raises(Refused, match="needs 16 bytes"):
        client.request(PUT, {}, [msgpack.packb(typed_array("int64", [2], b"\0" * 15))])
    assert client.get1(client.put("still here")) == "still here"


def test_tasks_with_ref_and_value_arguments(client):
    two = client.put(2)
    [three] = client.task(fn("add"), Ref(two), 1)
    [five] = client.task(fn("add"), Ref(three), Ref(two), name="adder", num_cpus=0.5)
    assert client.get([three, five]) == [3, 5]
    first, second = client.task(fn("pair"), 10, num_returns=2)
    assert client.get([first, second]) == [10, 11]
    assert client.task(fn("add"), 1, 2, num_returns=0) == []
    # Numpy both ways through a task.
    [total] = client.task(fn("add"), np.array([1.0, 2.0]), np.array([0.5, 0.5]))
    assert np.array_equal(client.get1(total), [1.5, 2.5])


def test_get_timeout_and_wait(client):
    [slow] = client.task(fn("slow"), 1.5)
    [quick] = client.task(fn("add"), 1, 1)
    assert client.get([quick, slow], timeout_ms=100) is None
    reply, _ = client.request(
        WAIT, {"ids": [slow, quick], "num_returns": 1, "timeout_ms": 10_000, "fetch_local": True}
    )
    assert reply == {"ready": [quick], "not_ready": [slow]}
    reply, _ = client.request(
        WAIT, {"ids": [slow, quick], "num_returns": 2, "timeout_ms": None, "fetch_local": False}
    )
    assert reply == {"ready": [slow, quick], "not_ready": []}
    assert client.get([slow, quick], timeout_ms=0) == ["done", 2]


def test_a_failed_task_is_an_error_record(client):
    [ref] = client.task(fn("divide"), 1, 0)
    [result] = client.get([ref])
    record = result["error"]
    assert record["type"] == "RayTaskError" and record["cause_type"] == "ZeroDivisionError"
    assert record["language"] == "python" and "division by zero" in record["message"]
    assert "xlang_funcs.py" in record["traceback"] and "in divide" in record["traceback"]
    # An error as an argument fails the task that takes it, with the same cause.
    [again] = client.task(fn("add"), Ref(ref), 1)
    assert client.get1(again)["error"]["cause_type"] == "ZeroDivisionError"
    # A function that does not exist: refused at submission, naming it.
    with pytest.raises(
        Refused, match="AttributeError: module 'xlang_funcs' has no attribute 'nope'"
    ):
        client.task(fn("nope"))
    with pytest.raises(Refused, match="ModuleNotFoundError"):
        client.task({"language": "python", "module": "no_such_module", "name": "f"})


def test_actors_create_call_get_by_name_kill(client):
    counter = {"language": "python", "module": "xlang_funcs", "name": "Counter"}
    actor_id = client.actor(counter, 10, name="counter", max_restarts=0)
    assert [client.get1(client.call(actor_id, "incr", by)[0]) for by in (1, 2)] == [11, 13]
    reply, _ = client.request(GET_ACTOR, {"name": "counter", "namespace": None})
    assert reply == {"actor_id": actor_id, "class": counter}
    two = client.put(2)
    assert client.get1(client.call(actor_id, "incr", Ref(two))[0]) == 15
    with pytest.raises(Refused, match="ValueError: .*nobody"):
        client.request(GET_ACTOR, {"name": "nobody", "namespace": None})
    with pytest.raises(Refused, match="AttributeError: .*no method 'decr'"):
        client.call(actor_id, "decr")
    assert client.request(KILL, {"actor_id": actor_id, "no_restart": True})[0] == {}
    [after] = client.call(actor_id, "incr", 1)
    record = client.get1(after)["error"]
    assert record["type"] in ("RayActorError", "ActorDiedError"), record


def objects_listed(head, ids: list[bytes]) -> list[str]:  # noqa: F811
    return listed_objects(head, [i.hex() for i in ids])


def test_release_and_disconnect_free_what_the_client_made(head, code):  # noqa: F811
    c = Client(head.client_address, token_of(head))
    c.connect(code_search_path=[code])
    kept = c.put("kept")
    dropped = [c.put(np.zeros(300_000, dtype=np.uint8)), c.task(fn("add"), 1, 2)[0]]
    assert c.get(dropped[1:]) == [3]
    assert objects_listed(head, [kept, *dropped]) == [i.hex() for i in [kept, *dropped]]
    c.release(ids=dropped)
    wait_for_condition(lambda: not objects_listed(head, dropped), timeout=30)
    assert c.get1(kept) == "kept"
    with pytest.raises(Refused, match="unknown object id"):
        c.get([dropped[0]])
    counter = {"language": "python", "module": "xlang_funcs", "name": "Counter"}
    actor_id = c.actor(counter, 0, name="held")
    c.get1(c.call(actor_id, "incr", 1)[0])
    c.close()
    wait_for_condition(lambda: not objects_listed(head, [kept]), timeout=30)
    wait_for_condition(lambda: not head.proxies(), timeout=30)
    # Its actor ended with it: the name is free again.
    other = Client(head.client_address, token_of(head))
    try:
        other.connect(code_search_path=[code])
        wait_for_condition(lambda: _no_actor(other, "held"), timeout=30)
    finally:
        other.close()


def _no_actor(c: Client, name: str) -> bool:
    try:
        c.request(GET_ACTOR, {"name": name, "namespace": None})
    except Refused:
        return True
    return False


def test_bad_requests_are_refused_and_the_connection_lives(client):
    with pytest.raises(Refused, match="ValueError: unknown option 'colour' for XLANG_SUBMIT_TASK"):
        client.task(fn("add"), 1, 2, colour="red")
    with pytest.raises(Refused, match="unknown option 'num_gpus' for XLANG_CREATE_ACTOR"):
        client.actor(
            {"language": "python", "module": "xlang_funcs", "name": "Counter"}, 1, num_gpus=1
        )
    with pytest.raises(Refused, match="the body must be a map"):
        client.request(PUT, "garbage", [encode(1)])
    with pytest.raises(Refused, match="unknown object id"):
        client.get([b"\x01" * 28])
    with pytest.raises(Refused, match="an argument must be"):
        client.request(SUBMIT, {"function": fn("add"), "args": [{"value": 3}], "options": {}})
    with pytest.raises(Refused, match="already connected"):
        client.connect()
    assert client.get1(client.task(fn("add"), 20, 22)[0]) == 42


def test_connect_is_checked_and_must_come_first(head):  # noqa: F811
    c = Client(head.client_address, token_of(head))
    try:
        with pytest.raises(Refused, match="ValueError: not connected"):
            c.put(1)
        with pytest.raises(Refused, match="unknown XLANG_CONNECT key 'classpath'"):
            c.connect(classpath=["/x"])
        with pytest.raises(Refused, match="must be absolute"):
            c.connect(code_search_path=["relative/dir"])
        assert c.connect()["namespace"]
    finally:
        c.close()
    wait_for_condition(lambda: not head.proxies(), timeout=30)


def answer_of(head, token: bytes, version: bytes | None = None) -> bytes:  # noqa: F811
    """Answer the greeting with this token and VERSION and send a connect
    frame at once, unasked; what the server sent after its greeting, until
    it closed the connection."""
    host, port = head.client_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        greeting = b""
        while len(greeting) < len(MAGIC) + VERSION_LEN + NONCE_LEN:
            greeting += sock.recv(4096)
        server_nonce = greeting[len(MAGIC) + VERSION_LEN :]
        proof = hmac.new(token, b"client" + server_nonce, hashlib.sha256).digest()
        header = msgpack.packb([CONNECT, 1, {"language": "cpp"}, []])
        frame = PREFIX.pack(len(header), 0) + header
        version = version or greeting[len(MAGIC) : len(MAGIC) + VERSION_LEN]
        sock.sendall(version + proof + os.urandom(NONCE_LEN) + frame)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our frame unread
        return received


def test_a_wrong_token_or_version_is_refused_before_anything_is_decoded(head):  # noqa: F811
    # The server closes the connection instead of proving it holds the
    # token; the frame sent after the wrong proof starts nothing.
    assert answer_of(head, os.urandom(32)) == b""
    wrong_version = struct.pack("<H16s", PROTOCOL_VERSION + 1, b"0.0.0")
    assert answer_of(head, token_of(head), wrong_version) == b""
    assert not head.proxies() and head.client_server().is_running()


def test_java_calls_without_the_java_runtime_say_so(client):
    # The code_search_path (the module folder) holds no solray Java runtime:
    # the task fails before any JVM starts, naming what is missing.
    [ref] = client.task({"language": "java", "class_name": "demo.Calc", "name": "add"}, 1, 2)
    record = client.get1(ref)["error"]
    assert record["type"] == "RayTaskError" and record["cause_type"] == "JvmError", record
    assert (
        "io.solray.runtime.JavaExecutor) is not on the job's code_search_path"
        in (record["message"])
    )
    with pytest.raises(Refused, match="unknown option 'max_concurrency' for XLANG_SUBMIT_TASK"):
        client.task(
            {"language": "java", "class_name": "demo.Calc", "name": "add"}, max_concurrency=2
        )
    with pytest.raises(Refused, match="a java function is a map of"):
        client.task({"language": "java", "class_name": "demo.Calc"})
