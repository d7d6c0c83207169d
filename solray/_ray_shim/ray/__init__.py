"""`import ray` under `solray run`: makes `ray` and `ray.X` solray's modules
(`solray/_private/ray_alias.py` explains how and why)."""

if __name__ == "ray":
    from solray._private import ray_alias

    ray_alias.install()
