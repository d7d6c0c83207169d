"""A node's resources: totals, what is free, and which GPUs are whose.

Quantities are floats, as in Ray (`num_cpus=0.5`). GPUs are also instances:
a lease of 2 GPUs gets two whole devices, a lease of 0.25 shares one device
with others, and the ids it got become the worker's CUDA_VISIBLE_DEVICES.

A placement group bundle with GPUs takes its devices from "GPU" when it is
reserved, and they become the instances of its own resources
("GPU_group_<i>_<pg>", and "GPU_group_<pg>" for any bundle): a task in the
bundle gets ids from those, so it sees the bundle's devices, and releasing
the bundle gives exactly those devices back.
"""

from __future__ import annotations

EPS = 1e-9


def fits(need: dict[str, float], have: dict[str, float]) -> bool:
    """Whether amounts `need` are within `have` (instances aside)."""
    return all(v <= have.get(k, 0.0) + EPS for k, v in need.items() if v > 0)


# What a lease or bundle got of each instance resource: {resource: {id: share}}.
Allocation = dict[str, dict[int, float]]


class ResourceSet:
    def __init__(self, total: dict[str, float], num_gpus: int = 0):
        self.total = {k: float(v) for k, v in total.items()}
        self.available = dict(self.total)
        # Instance resources: {resource: {device id: free share}}.
        self.instances: dict[str, dict[int, float]] = {}
        if num_gpus:
            self.instances["GPU"] = {i: 1.0 for i in range(num_gpus)}

    def feasible(self, request: dict[str, float]) -> bool:
        return fits(request, self.total)

    def fits(self, request: dict[str, float]) -> bool:
        if not fits(request, self.available):
            return False
        return all(
            self._pick(self.instances[k], v) is not None
            for k, v in request.items()
            if k in self.instances and v > 0
        )

    @staticmethod
    def _pick(pool: dict[int, float], amount: float) -> dict[int, float] | None:
        """Shares of devices making up `amount`: whole devices for 1 or
        more, a share of one device below 1; None if the pool cannot."""
        if amount >= 1:
            whole = [i for i, free in sorted(pool.items()) if free >= 1.0 - EPS]
            n = int(round(amount))
            return {i: 1.0 for i in whole[:n]} if len(whole) >= n else None
        for i, free in sorted(pool.items()):
            if free >= amount - EPS:
                return {i: amount}
        return None

    def acquire(self, request: dict[str, float]) -> Allocation:
        """Take `request` (it must fit); returns the instances it got."""
        allocation: Allocation = {}
        for key, amount in request.items():
            if key in self.instances and amount > 0:
                shares = self._pick(self.instances[key], amount) or {}
                for i, share in shares.items():
                    self.instances[key][i] -= share
                allocation[key] = shares
            self.available[key] = self.available.get(key, 0.0) - amount
        return allocation

    def release(
        self, request: dict[str, float], allocation: Allocation, blocked: bool = False
    ) -> None:
        for key, shares in allocation.items():
            pool = self.instances.get(key)
            if pool is None:
                continue  # its bundle is gone, and its devices with it
            for i, share in shares.items():
                if i in pool:
                    pool[i] += share
        for k, v in request.items():
            if blocked and k == "CPU":
                continue  # already lent back while the worker was blocked
            if k in self.total:
                self.available[k] = self.available.get(k, 0.0) + v

    def lend_cpus(self, request: dict[str, float]) -> None:
        self.available["CPU"] = self.available.get("CPU", 0.0) + request.get("CPU", 0.0)

    def reclaim_cpus(self, request: dict[str, float]) -> None:
        self.available["CPU"] = self.available.get("CPU", 0.0) - request.get("CPU", 0.0)

    def add(self, amounts: dict[str, float], instances: Allocation | None = None) -> None:
        """New resources appear on this node (a reserved bundle's), with the
        device shares that back them."""
        for k, v in amounts.items():
            self.total[k] = self.total.get(k, 0.0) + v
            self.available[k] = self.available.get(k, 0.0) + v
        for key, shares in (instances or {}).items():
            pool = self.instances.setdefault(key, {})
            for i, share in shares.items():
                pool[i] = pool.get(i, 0.0) + share

    def remove(self, amounts: dict[str, float], instances: Allocation | None = None) -> None:
        for k, v in amounts.items():
            self.total[k] = self.total.get(k, 0.0) - v
            self.available[k] = self.available.get(k, 0.0) - v
            if self.total[k] <= EPS:
                del self.total[k]
                self.available.pop(k, None)
        for key, shares in (instances or {}).items():
            pool = self.instances.get(key, {})
            for i, share in shares.items():
                if i in pool:
                    pool[i] -= share
                    if pool[i] <= EPS:
                        del pool[i]
            if not pool:
                self.instances.pop(key, None)

    def available_view(self) -> dict[str, float]:
        return {k: round(max(v, 0.0), 6) for k, v in self.available.items()}


def device_ids(allocation: Allocation) -> list[int]:
    """The devices (CUDA_VISIBLE_DEVICES) a lease's allocation holds."""
    return sorted({i for shares in allocation.values() for i in shares})
