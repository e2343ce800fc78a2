"""The scheduler's unit of work, shared by its rewrites (schedule.py, sums.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Call:
    node: int
    kernel: object
    operands: tuple        # the nodes whose values the kernel takes (a fused call may skip the node's own)


def read_counts(calls: list) -> dict[int, int]:
    """How many calls read each value."""
    reads: dict[int, int] = {}
    for call in calls:
        for o in call.operands:
            reads[o] = reads.get(o, 0) + 1
    return reads
