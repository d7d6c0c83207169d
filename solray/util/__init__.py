"""Utilities mirroring `ray.util`."""

from solray.util.actor_pool import ActorPool

__all__ = ["ActorPool"]
