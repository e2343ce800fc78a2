"""Readers for data files: IDX (the MNIST format, gzipped or not) and CSV.

Every malformed file gets a `GradError` naming the file and the row, field or byte at fault.
"""
from __future__ import annotations

import csv
import gzip
import io
import tokenize
import zipfile
import zlib
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


def read_npz(path: str | Path) -> dict:
    """The arrays of a NumPy .npz file by name. Object arrays (pickles, which run code when loaded) are
    refused; a file that is not a zip archive, or a damaged array, is named with its field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise GradError(f"cannot load {path}: {err.strerror}") from None
    if head[:2] != b"PK":
        raise GradError(f"cannot load {path}: not an NPZ file (an .npz is a zip archive of .npy arrays; this file starts "
                        f"with {head!r})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise GradError(f"cannot load {path}: not a readable NPZ file ({err})") from None
    out = {}
    with archive:
        for name in archive.files:
            try:
                out[name] = archive[name]
            except ValueError as err:
                if "pickle" in str(err):   # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                    raise GradError(f"cannot load {path}: field {name!r} holds Python objects (pickled data), which gradlang "
                                    "never loads: unpickling can run code") from None
                raise GradError(f"cannot load {path}: field {name!r} is damaged ({err})") from None
            except (OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error, tokenize.TokenError) as err:
                raise GradError(f"cannot load {path}: field {name!r} is damaged ({type(err).__name__}: {err})") from None
    return out


def read_csv(path: str | Path, target: str | int | None = -1, header: bool = True,
             delimiter: str = ",") -> dict:
    """A numeric CSV file: `x` = the feature columns [n, k], `y` = the `target` column [n]
    (integers stay integers: class labels), or only `x` when target is None."""
    path = Path(path)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise GradError(f"{path}: the CSV delimiter must be one character (not a quote or line break), "
                        f"got {delimiter!r}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, str))):
        raise GradError(f"{path}: the target column must be a column name or an index, got {target!r}")
    rows, lines = [], []   # each row and the line it ends on (blank lines and quoted line breaks count)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise GradError(f"{path}:{line}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        previous = 0
        for row in reader:
            rows.append(row)
            lines.append(previous + 1)   # where the row starts (a quoted field may span lines)
            previous = reader.line_num
    except csv.Error as err:
        raise GradError(f"{path}:{len(lines) + 1}: not a readable CSV file ({err})") from None
    names = rows.pop(0) if header and rows else None
    if names is not None:
        lines.pop(0)
    lines = [n for n, r in zip(lines, rows) if r]
    rows = [r for r in rows if r]
    if not rows:
        raise GradError(f"{path}: no data rows")
    width = len(rows[0])
    values = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        line = lines[i]
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
