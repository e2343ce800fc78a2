"""Passes: pure functions from Graph to Graph (autodiff, simplify), plus the verifier and the scheduler."""
from .autodiff import backprop, differentiate
from .simplify import simplify
from .verify import verify

__all__ = ["backprop", "differentiate", "simplify", "verify"]
