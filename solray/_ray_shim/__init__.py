"""Holds the `ray` package that `solray run` puts on the path (see
`solray/_private/ray_alias.py`); importing this package does nothing."""
