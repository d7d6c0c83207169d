"""Utilities mirroring `ray.util`."""
