"""A node's resources: totals, what is free, and which GPUs are whose.

Quantities are floats, as in Ray (`num_cpus=0.5`). GPUs are also instances:
a lease of 2 GPUs gets two whole devices, a lease of 0.25 shares one device
with others, and the ids it got become the worker's CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

EPS = 1e-9


class ResourceSet:
    def __init__(self, total: dict[str, float], num_gpus: int = 0):
        self.total = {k: float(v) for k, v in total.items()}
        self.available = dict(self.total)
        self.gpu_free = [1.0] * num_gpus

    def feasible(self, request: dict[str, float]) -> bool:
        return all(v <= self.total.get(k, 0.0) + EPS for k, v in request.items() if v > 0)

    def fits(self, request: dict[str, float]) -> bool:
        if not all(v <= self.available.get(k, 0.0) + EPS for k, v in request.items() if v > 0):
            return False
        return self._pick_gpus(request.get("GPU", 0.0)) is not None

    def _pick_gpus(self, amount: float) -> list[int] | None:
        if amount <= 0:
            return []
        if amount >= 1:
            whole = [i for i, free in enumerate(self.gpu_free) if free >= 1.0 - EPS]
            n = int(round(amount))
            return whole[:n] if len(whole) >= n else None
        for i, free in enumerate(self.gpu_free):
            if free >= amount - EPS:
                return [i]
        return None

    def acquire(self, request: dict[str, float]) -> list[int]:
        gpus = self._pick_gpus(request.get("GPU", 0.0)) or []
        amount = request.get("GPU", 0.0)
        for i in gpus:
            self.gpu_free[i] -= min(1.0, amount)
        for k, v in request.items():
            self.available[k] = self.available.get(k, 0.0) - v
        return gpus

    def release(self, request: dict[str, float], gpu_ids: list[int], blocked: bool = False) -> None:
        amount = request.get("GPU", 0.0)
        for i in gpu_ids:
            self.gpu_free[i] += min(1.0, amount)
        for k, v in request.items():
            if blocked and k == "CPU":
                continue  # already lent back while the worker was blocked
            self.available[k] = self.available.get(k, 0.0) + v

    def lend_cpus(self, request: dict[str, float]) -> None:
        self.available["CPU"] = self.available.get("CPU", 0.0) + request.get("CPU", 0.0)

    def reclaim_cpus(self, request: dict[str, float]) -> None:
        self.available["CPU"] = self.available.get("CPU", 0.0) - request.get("CPU", 0.0)

    def add(self, amounts: dict[str, float]) -> None:
        """New resources appear on this node (a reserved bundle's)."""
        for k, v in amounts.items():
            self.total[k] = self.total.get(k, 0.0) + v
            self.available[k] = self.available.get(k, 0.0) + v

    def remove(self, amounts: dict[str, float]) -> None:
        for k, v in amounts.items():
            self.total[k] = self.total.get(k, 0.0) - v
            self.available[k] = self.available.get(k, 0.0) - v
            if self.total[k] <= 1e-9:
                del self.total[k]
                self.available.pop(k, None)

    def available_view(self) -> dict[str, float]:
        return {k: round(max(v, 0.0), 6) for k, v in self.available.items()}
