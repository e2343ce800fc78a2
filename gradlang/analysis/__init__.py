"""Analyses: functions that read a graph and report on it (verification, lint, cost, where indices are
checked); none changes the graph."""
from .verify import verify

__all__ = ["verify"]
