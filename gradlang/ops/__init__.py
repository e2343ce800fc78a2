"""The primitive registry (importing this package registers every primitive)."""
from . import (
    nn_ops,  # noqa: F401  (registers convolution, pooling windows, take, concat)
    primitives,  # noqa: F401  (registers the primitives)
)
from .registry import Primitive, all_primitives, get

__all__ = ["Primitive", "all_primitives", "get"]
