"""Readers for data files: IDX (the MNIST format, gzipped or not) and CSV.

Every malformed file gets a `GradError` naming the file and the row, field or byte at fault.
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from ..errors import GradError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise GradError(f"{path}: corrupt gzip data ({err})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file as an array: magic (0, 0, type, rank), rank big-endian uint32 sizes, then the data."""
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise GradError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    code, rank = data[2], data[3]
    if code not in _IDX_TYPES:
        raise GradError(f"{path}: unknown IDX element type 0x{code:02x} in the magic number")
    header = 4 + 4 * rank
    if len(data) < header:
        raise GradError(f"{path}: truncated IDX header (needs {header} bytes, file has {len(data)})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=rank, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise GradError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file has "
                        f"{len(data)} bytes")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_csv(path: str | Path, target: str | int | None = -1, header: bool = True,
             delimiter: str = ",") -> dict:
    """A numeric CSV file: `x` = the feature columns [n, k], `y` = the `target` column [n]
    (integers stay integers: class labels), or only `x` when target is None."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise GradError(f"{path}: not a readable CSV file ({err})") from None
    names = rows.pop(0) if header and rows else None
    rows = [r for r in rows if r]
    if not rows:
        raise GradError(f"{path}: no data rows")
    width = len(rows[0])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        line = i + (2 if names is not None else 1)
        if len(row) != width:
            raise GradError(f"{path}:{line}: expected {width} fields, found {len(row)}")
        for j, field in enumerate(row):
            try:
                values[i, j] = float(field)
            except ValueError:
                column = names[j] if names is not None and j < len(names) else f"column {j + 1}"
                raise GradError(f"{path}:{line}: field {column!r} is not a number: {field.strip()!r}") from None
    if target is None:
        return {"x": values}
    if isinstance(target, str):
        if names is None or target not in names:
            raise GradError(f"{path}: no column named {target!r}"
                            + (f"; columns: {', '.join(names)}" if names else " (the file has no header)"))
        target = names.index(target)
    if not -width <= target < width:
        raise GradError(f"{path}: target column {target} is out of range for {width} columns")
    target %= width
    y = values[:, target]
    if np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return {"x": np.delete(values, target, axis=1), "y": y}
