"""`solray.cloudpickle`: the cloudpickle module, under the import path Ray
gives it (`ray.cloudpickle`). solray depends on cloudpickle rather than
vendoring a copy."""

from cloudpickle import *  # noqa: F403
from cloudpickle import __all__, __version__  # noqa: F401
