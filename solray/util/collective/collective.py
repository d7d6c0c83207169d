"""Ray's collective communication API (`ray.util.collective`), on CPU.

The same functions, arguments, defaults and errors as Ray's; the tensors are
numpy arrays, changed in place as Ray's are (allreduce, broadcast and recv
write into the tensor given; allgather into each array of the list;
reducescatter into the tensor; reduce into the destination's tensor).

Backends. solray has no GPU, torch or pygloo: its one backend is its own CPU
implementation (group.py), served under Ray's CPU backend name "gloo"
because it behaves as gloo's collectives do for a user (blocking calls on
numpy arrays, in place, bounded by `gloo_timeout` milliseconds). "nccl"
(Ray's default, so a call that names no backend) and Ray's other names
raise a RuntimeError saying so.

Groups are per process: `init_collective_group` in each actor (or task), or
`create_collective_group` in the driver, which records the declaration in
the control store; each declared actor then joins at its first collective
call, as in Ray.
"""

from __future__ import annotations

import threading

import msgpack
import numpy as np

from solray._private import context
from solray.experimental import internal_kv
from solray.util.collective import group as _group
from solray.util.collective.types import Backend, ReduceOp

_groups: dict[str, _group.CpuGroup] = {}  # this process's groups, by name
_groups_lock = threading.Lock()  # an actor's threads may join groups at once


def nccl_available() -> bool:
    return False


def gloo_available() -> bool:
    return True


def _check_backend(backend) -> str:
    backend = Backend(backend)
    if backend != Backend.GLOO:
        raise RuntimeError(
            f"{backend.upper()} is not available: solray runs collectives on CPU numpy "
            "arrays only, with backend='gloo' (solray's own implementation; it needs no "
            "GPU, torch or pygloo)"
        )
    return backend


def _check_inside_worker() -> None:
    cw = context.core_worker
    if cw is None or cw.is_driver:
        raise RuntimeError("The collective APIs shall be only used inside a Ray actor or task.")


def _check_group_args(world_size, group_name) -> None:
    if not isinstance(group_name, str) or not group_name:
        raise ValueError(f"group_name '{group_name}' needs to be a string.")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size <= 0:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")


def _check_timeout(gloo_timeout) -> None:
    if not isinstance(gloo_timeout, int) or isinstance(gloo_timeout, bool) or gloo_timeout <= 0:
        raise ValueError(
            f"gloo_timeout must be a positive int (milliseconds), got {gloo_timeout!r}"
        )


def is_group_initialized(group_name: str = "default") -> bool:
    """Whether this process has joined the group `group_name`."""
    return group_name in _groups


def init_collective_group(
    world_size: int,
    rank: int,
    backend=Backend.NCCL,
    group_name: str = "default",
    gloo_timeout: int = 30000,
) -> None:
    """Join this actor (or task) to `group_name` as `rank` of `world_size`;
    returns once every rank has joined (or raises after `gloo_timeout` ms)."""
    _check_inside_worker()
    backend = _check_backend(backend)
    _check_group_args(world_size, group_name)
    _check_timeout(gloo_timeout)
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    with _groups_lock:
        if group_name in _groups:
            raise RuntimeError("Trying to initialize a group twice.")
        _groups[group_name] = _group.CpuGroup(world_size, rank, group_name, gloo_timeout)


def create_collective_group(
    actors: list,
    world_size: int,
    ranks: list[int],
    backend=Backend.NCCL,
    group_name: str = "default",
    gloo_timeout: int = 30000,
) -> None:
    """Driver: declare `actors` (ranks `ranks`) a collective group. Each of
    them joins at its first collective call on the group."""
    from solray._private import worker

    backend = _check_backend(backend)
    _check_group_args(world_size, group_name)
    _check_timeout(gloo_timeout)
    if len(ranks) != len(actors):
        raise RuntimeError(
            f"Each actor should correspond to one rank. Got '{len(ranks)}' ranks but "
            f"'{len(actors)}' actors"
        )
    if sorted(ranks) != list(range(len(ranks))):
        raise RuntimeError(
            f"Ranks must be a permutation from 0 to '{len(ranks)}'. Got '{list(ranks)}'."
        )
    if len(ranks) != world_size:
        raise RuntimeError(f"world_size is {world_size} but {len(ranks)} actors were given.")
    worker.auto_init()
    declaration = msgpack.packb(
        {
            "actors": [a._actor_id.hex() for a in actors],
            "ranks": list(ranks),
            "world_size": world_size,
            "timeout": gloo_timeout,
        }
    )
    key = _group.declaration_key(group_name)
    if internal_kv._internal_kv_put(key, declaration, overwrite=False, namespace=_group._NS):
        raise RuntimeError("Trying to initialize a group twice.")


def destroy_collective_group(group_name: str = "default") -> None:
    """Leave the group in this process (its name becomes free again once
    every rank has left)."""
    _check_inside_worker()
    with _groups_lock:
        g = _groups.pop(group_name, None)
    internal_kv._internal_kv_del(_group.declaration_key(group_name), namespace=_group._NS)
    if g is not None:
        g.destroy()


def get_rank(group_name: str = "default") -> int:
    """This process's rank in the group, or -1 if it has not joined it."""
    _check_inside_worker()
    g = _groups.get(group_name)
    return g.rank if g is not None else -1


def get_collective_group_size(group_name: str = "default") -> int:
    """The group's world size, or -1 if this process has not joined it."""
    _check_inside_worker()
    g = _groups.get(group_name)
    return g.world_size if g is not None else -1


def get_group_handle(group_name: str = "default") -> _group.CpuGroup:
    """The group, joining it now if the driver declared it for this actor."""
    _check_inside_worker()
    g = _groups.get(group_name)
    if g is not None:
        return g
    raw = internal_kv._internal_kv_get(_group.declaration_key(group_name), namespace=_group._NS)
    me = context.core_worker.actor_id
    declared = msgpack.unpackb(raw) if raw is not None else None
    if declared is None or me is None or me.hex() not in declared["actors"]:
        raise RuntimeError(
            f"The collective group '{group_name}' is not initialized in the process."
        )
    rank = declared["ranks"][declared["actors"].index(me.hex())]
    with _groups_lock:
        if group_name not in _groups:
            _groups[group_name] = _group.CpuGroup(
                declared["world_size"], rank, group_name, declared["timeout"]
            )
        return _groups[group_name]


# -- checks on the arguments of the calls ---------------------------------------


def _check_tensor(tensor) -> None:
    if not isinstance(tensor, np.ndarray):
        raise RuntimeError(
            f"Unrecognized tensor type '{type(tensor)}'. Supported types are: np.ndarray "
            "(solray's collectives run on CPU numpy arrays)."
        )
    if tensor.dtype.hasobject:
        raise RuntimeError("object arrays cannot be sent: use a numeric dtype")


def _check_tensor_list(tensor_list, world_size: int, what: str) -> None:
    if not isinstance(tensor_list, list):
        raise RuntimeError(f"The input must be a list of tensors. Got '{type(tensor_list)}'.")
    if not tensor_list:
        raise RuntimeError("Got an empty list of tensors.")
    for t in tensor_list:
        _check_tensor(t)
    if len(tensor_list) != world_size:
        raise RuntimeError(
            f"The length of the tensor list operands to {what} must be equal to world_size "
            f"({world_size}), got {len(tensor_list)}."
        )


def _check_rank(g: _group.CpuGroup, rank, what: str) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise ValueError(f"{what} must be an int, got {rank!r}")
    if rank < 0:
        raise ValueError(f"rank '{rank}' is negative.")
    if rank >= g.world_size:
        raise ValueError(f"rank '{rank}' must be less than world size '{g.world_size}'")


def _check_op(op) -> None:
    if not isinstance(op, ReduceOp):
        raise ValueError(f"op must be a ReduceOp (SUM, PRODUCT, MIN or MAX), got {op!r}")


# -- the collectives --------------------------------------------------------------


def allreduce(tensor, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce `tensor` over every rank; every rank's `tensor` becomes the result."""
    _check_tensor(tensor)
    _check_op(op)
    get_group_handle(group_name).allreduce(tensor, op)


def barrier(group_name: str = "default") -> None:
    """Return once every rank of the group has called barrier."""
    get_group_handle(group_name).barrier()


def reduce(tensor, dst_rank: int = 0, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Reduce `tensor` over every rank into `dst_rank`'s `tensor`."""
    _check_tensor(tensor)
    _check_op(op)
    g = get_group_handle(group_name)
    _check_rank(g, dst_rank, "dst_rank")
    g.reduce(tensor, dst_rank, op)


def broadcast(tensor, src_rank: int = 0, group_name: str = "default") -> None:
    """Copy `src_rank`'s `tensor` into every other rank's `tensor`."""
    _check_tensor(tensor)
    g = get_group_handle(group_name)
    _check_rank(g, src_rank, "src_rank")
    g.broadcast(tensor, src_rank)


def allgather(tensor_list: list, tensor, group_name: str = "default") -> None:
    """Every rank's `tensor`, into `tensor_list[rank]` on every rank."""
    _check_tensor(tensor)
    g = get_group_handle(group_name)
    _check_tensor_list(tensor_list, g.world_size, "allgather")
    g.allgather(tensor_list, tensor)


def reducescatter(tensor, tensor_list: list, group_name: str = "default", op=ReduceOp.SUM) -> None:
    """Rank r's `tensor` becomes the reduction of every rank's `tensor_list[r]`."""
    _check_tensor(tensor)
    _check_op(op)
    g = get_group_handle(group_name)
    _check_tensor_list(tensor_list, g.world_size, "reducescatter")
    g.reducescatter(tensor, tensor_list, op)


def send(tensor, dst_rank: int, group_name: str = "default") -> None:
    """Send `tensor` to `dst_rank` (which calls recv); returns once it arrived."""
    _check_tensor(tensor)
    g = get_group_handle(group_name)
    _check_rank(g, dst_rank, "dst_rank")
    if dst_rank == g.rank:
        raise RuntimeError(f"The destination rank '{dst_rank}' is self.")
    g.send(tensor, dst_rank)


def recv(tensor, src_rank: int, group_name: str = "default") -> None:
    """Receive into `tensor` what `src_rank` sends with send."""
    _check_tensor(tensor)
    g = get_group_handle(group_name)
    _check_rank(g, src_rank, "src_rank")
    if src_rank == g.rank:
        raise RuntimeError(f"The source rank '{src_rank}' is self.")
    g.recv(tensor, src_rank)


def _needs_gpus(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(
            f"{name} requires NCCL and GPUs (cupy), which solray does not have: its "
            "collectives run on CPU numpy arrays, with backend='gloo'"
        )

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Ray's {name}: needs GPUs, so it raises RuntimeError here."
    return call


allreduce_multigpu = _needs_gpus("allreduce_multigpu")
reduce_multigpu = _needs_gpus("reduce_multigpu")
broadcast_multigpu = _needs_gpus("broadcast_multigpu")
allgather_multigpu = _needs_gpus("allgather_multigpu")
reducescatter_multigpu = _needs_gpus("reducescatter_multigpu")
send_multigpu = _needs_gpus("send_multigpu")
recv_multigpu = _needs_gpus("recv_multigpu")
synchronize = _needs_gpus("synchronize")
