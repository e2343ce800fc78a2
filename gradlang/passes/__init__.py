"""Transforms: pure functions from Graph to Graph (differentiation, stability rewrites, simplification)."""
from .autodiff import backprop, differentiate
from .simplify import simplify

__all__ = ["backprop", "differentiate", "simplify"]
