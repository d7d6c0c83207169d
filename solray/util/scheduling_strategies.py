"""Scheduling strategies, with Ray's names and arguments."""

from __future__ import annotations


class NodeAffinitySchedulingStrategy:
    """Run on the node with `node_id` (hex).

    If that node is alive and could ever fit the request, the task or actor
    runs there only, waiting for resources if they are busy. If it is dead,
    unknown or too small: with `soft` it runs elsewhere, else it fails
    (TaskUnschedulableError / ActorUnschedulableError).

    `_spill_on_unavailable` (soft only): run elsewhere also when the node is
    alive but has no room right now. `_fail_on_unavailable` (hard only): fail
    at once when the node has no room right now, instead of waiting.
    """

    def __init__(
        self,
        node_id: str,
        soft: bool,
        _spill_on_unavailable: bool = False,
        _fail_on_unavailable: bool = False,
    ):
        if not isinstance(node_id, str):
            raise TypeError(
                f"NodeAffinitySchedulingStrategy: node_id must be a hex str, got {node_id!r}"
            )
        if _spill_on_unavailable and not soft:
            raise ValueError(
                "NodeAffinitySchedulingStrategy: _spill_on_unavailable=True only works with "
                "soft=True (a hard affinity never runs elsewhere)"
            )
        if _fail_on_unavailable and soft:
            raise ValueError(
                "NodeAffinitySchedulingStrategy: _fail_on_unavailable=True only works with "
                "soft=False (a soft affinity runs elsewhere instead of failing)"
            )
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    @property
    def when_busy(self) -> str:
        """What to do while the node is alive but has no room: "wait",
        "spill" (run elsewhere) or "fail"."""
        if self._spill_on_unavailable:
            return "spill"
        return "fail" if self._fail_on_unavailable else "wait"

    def __repr__(self) -> str:
        extra = "" if self.when_busy == "wait" else f", when busy: {self.when_busy}"
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft}{extra})"


class PlacementGroupSchedulingStrategy:
    def __init__(
        self,
        placement_group,
        placement_group_bundle_index: int = -1,
        placement_group_capture_child_tasks: bool | None = None,
    ):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks
