"""The live parameter arrays of a program, as a mapping that can only be written through.

Compiled executables hold references to the param arrays themselves, so a param must never be
replaced by another array: `params["w"] = new` copies `new` into the live array (after checking its
shape and that its values fit the param's dtype), which every executable, the optimizer, `save` and
`set_params` then see alike. A program's state (`state NAME : … = init`, which training steps write and
no optimizer trains) is held the same way, as a second such mapping (`noun` "state").
"""
from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from ..errors import GradError


class Params(MutableMapping):
    """Param name → live array. Assignment writes into the array; params cannot be added or removed.
    `noun` says what the values are, in messages ("param", or "state" for the program's state)."""

    def __init__(self, arrays: dict[str, np.ndarray], noun: str = "param"):
        self._arrays = arrays
        self.noun = noun

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(_unknown(name, self._arrays, self.noun)) from None

    def __setitem__(self, name: str, value) -> None:
        if name not in self._arrays:
            raise KeyError(_unknown(name, self._arrays, self.noun))
        live = self._arrays[name]
        if value is live:   # `params[k] -= …` updates in place, then assigns the same array back
            return
        live[...] = checked_value(name, value, live.shape, live.dtype, self.noun)

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"{self.noun}s cannot be removed ({self.noun} {name!r} is part of the compiled program)")

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def assign(self, values: dict) -> None:
        """Copy new values into the params (`Program.set_params`): an unknown name is a KeyError, and
        every value is checked before any is written."""
        self.write(self.checked(values))

    def checked(self, values: dict) -> dict[str, np.ndarray]:
        """`values` as arrays `write` may store, each checked (an unknown name is a KeyError); nothing is
        written, so that values for several mappings can all be checked before any is written."""
        unknown = [name for name in values if name not in self._arrays]
        if unknown:
            raise KeyError(_unknown(unknown[0], self._arrays, self.noun))
        return {name: checked_value(name, value, self._arrays[name].shape, self._arrays[name].dtype, self.noun)
                for name, value in values.items()}

    def write(self, checked: dict[str, np.ndarray]) -> None:
        """Copy values `checked` returned into the live arrays."""
        for name, value in checked.items():
            self._arrays[name][...] = value

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._arrays.items())
        return f"{'Params' if self.noun == 'param' else 'State'}({shapes})"


def checked_value(name: str, value, shape: tuple, dtype: np.dtype, noun: str = "param") -> np.ndarray:
    """`value` as an array that can be stored in a param of this shape and dtype, or a GradError saying
    why not: a different shape, a non-numeric or complex value, or finite values that overflow the dtype."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:   # a ragged list, say
        raise GradError(f"{noun} {name}: cannot use {type(value).__name__} as an array ({exc})") from None
    if array.dtype.kind not in "fiu":
        what = "complex" if array.dtype.kind == "c" else "boolean" if array.dtype.kind == "b" else str(array.dtype)
        raise GradError(f"{noun} {name}: expected real numbers ({np.dtype(dtype).name}), got {what} values")
    if array.shape != tuple(shape):
        raise GradError(f"{noun} {name}: expected shape {list(shape)}, got {list(array.shape)}")
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    overflow = np.isfinite(array) & ~np.isfinite(converted)
    if overflow.any():
        raise GradError(f"{noun} {name}: value {float(array[overflow].flat[0]):g} does not fit in "
                        f"{np.dtype(dtype).name}")
    return converted


def _unknown(name: str, arrays: dict, noun: str = "param") -> str:
    if noun == "param":
        return f"no param named {name!r}; the program's params are {', '.join(arrays) or 'none'}"
    return f"no {noun} named {name!r}; the program's {noun} is {', '.join(arrays) or 'none'}"
