"""`solray._raylet`: the import paths Ray users reach its Cython module by,
for the classes that live elsewhere in solray."""

from solray.object_ref import ObjectRef
from solray.object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator

ObjectID = ObjectRef  # Ray's old name for ObjectRef
StreamingObjectRefGenerator = ObjectRefGenerator  # its name before Ray 2.10

__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "StreamingObjectRefGenerator",
]
