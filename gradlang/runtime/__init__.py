"""Execution: the schedule interpreter, optimizers, data sources and the training loop."""
