"""The train block as the run time reads it: each setting's value and where it is written, so that
what only a run can find wrong (a seed or step count passed from Python, a data source that is not
one) is reported at the setting. A program without a train block has an empty plan.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GradError, Span
from .values import DataSpec, OptimizerSpec, describe
from .outputs import resolve_output

DEFAULT_OPTIMIZER = OptimizerSpec("sgd", (("lr", 0.01),), None)   # what the train block defaults to


class Plan:
    """The settings of a train block (elaborate.py's TrainPlan, or None for a program without one)."""

    def __init__(self, block=None):
        self.settings: dict = block.settings if block is not None else {}
        self.spans: dict = block.spans if block is not None else {}
        self.span: Span | None = block.span if block is not None else None
        self.graph = block.graph if block is not None else None   # the settings that follow `step`
        self.phases: list = self.settings.get("phases", [])        # PhaseSpec values; empty: one loss

    def get(self, key: str, default=None):
        return self.settings.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.settings

    def span_of(self, key: str) -> Span | None:
        return self.spans.get(key)

    def seed(self, override: int | None = None) -> int:
        """The seed: `override` (from Python or the command line), else the block's, else 0."""
        seed = override if override is not None else self.settings.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            span = self.spans.get("seed") if override is None else None
            raise GradError(f"seed must be a non-negative integer, got {describe(seed)}", span)
        return seed

    def integer(self, key: str, value=None, minimum: int = 1):
        """`value`, else the block's `key` (None when neither is given), checked to be an integer ≥ minimum."""
        value = self.settings.get(key) if value is None else value
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise GradError(f"{key} must be an integer ≥ {minimum}, got {show(value)}", self.spans.get(key))
        return value

    def data_spec(self, setting: str) -> DataSpec:
        """The data source a setting (`data`, `validation`, `test`) names."""
        spec = self.settings.get(setting)
        if spec is None:
            raise GradError(f"the train block names no {setting} (add `{setting} = …`)"
                            + ("; or pass data to train()" if setting == "data" else ""), self.span)
        if not isinstance(spec, DataSpec):
            raise GradError(f"train setting {setting} must be a data source, got {describe(spec)}",
                            self.spans.get(setting))
        return spec

    def optimizer_spec(self) -> OptimizerSpec:
        """The block's optimizer; sgd(lr: 0.01) when it names none."""
        spec = self.settings.get("optimizer")
        if spec is None:
            return DEFAULT_OPTIMIZER
        if not isinstance(spec, OptimizerSpec):
            raise GradError("the train block's optimizer must be an optimizer such as sgd(lr: 0.1)",
                            self.spans["optimizer"])
        return spec

    def output(self, folder: Path, setting: str) -> Path | None:
        """The file the block's `save` or `checkpoint` names, resolved below `folder` (outputs.py), or None."""
        value = self.settings.get(setting)
        return None if value is None else resolve_output(folder, setting, value, self.spans.get(setting))


def show(value) -> str:
    """A setting's value as an error message quotes it."""
    return repr(value) if isinstance(value, (int, float, str)) else describe(value)
