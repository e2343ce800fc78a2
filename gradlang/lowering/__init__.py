"""Lowering: a graph and its requested outputs become a flat schedule, the runtime's contract."""
