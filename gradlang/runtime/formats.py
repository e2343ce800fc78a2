"""Readers for data files: IDX (the MNIST format), CSV, NPZ and text (all but NPZ may be gzipped).

Every malformed file gets a `GradError` naming the file and the row, field or byte at fault. Data files
are untrusted (docs/security.md), so nothing is allocated on the word of a file: a reader opens only
regular files (a device such as /dev/zero or a FIFO never ends), reads in bounded chunks, and checks
every size a file declares against `memory_limit()` before allocating it.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import re
import stat
import tokenize
import zipfile
import zlib
from array import array
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import GradError
from ..ir.graph import memory_limit, refuse_oversize

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IDX_MAX_RANK = 32                  # NumPy's fewest dimensions across versions; an IDX byte allows 255
_CHUNK = 1 << 20                   # bytes read at a time, so that an endless stream is stopped in time
FLOAT32_MAX = float(np.finfo(np.float32).max)
EXACT_INTEGER = 2 ** 53            # a float64 holds every integer below this exactly, and not all above
NUMBER_KINDS = "biuf"              # the NumPy dtype kinds a data field may have: bool, int, uint, float
_KIND_NAMES = {"c": "complex numbers", "U": "strings", "S": "bytes", "V": "raw or structured records",
               "M": "dates", "m": "time spans", "O": "Python objects"}


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket or other special file"


@contextmanager
def open_regular(path: Path):
    """`path` open for binary reading and its size, once it is known to be a regular file no larger than
    the memory limit. Opening does not block: a FIFO without a writer is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise GradError(f"cannot read {path}: {err.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise GradError(f"{path}: not a regular file but {_file_kind(info.st_mode)}; data must come from a file "
                            "(a device or pipe can be endless)")
        refuse_oversize(info.st_size, f"{path}: reading the file")
    except GradError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        yield file, info.st_size


@contextmanager
def _reading(path: Path):
    """The bytes of `path` as a stream, gunzipped when the file starts with gzip's magic number, and how
    many bytes the stream holds (None for gzip, where only reading tells). A read error or damaged gzip
    data (a bad deflate stream, CRC or length) is a GradError naming the file."""
    with open_regular(path) as (file, size):
        gzipped = file.peek(2)[:2] == b"\x1f\x8b"
        stream = gzip.GzipFile(fileobj=file, mode="rb") if gzipped else file
        try:
            yield stream, None if gzipped else size
        except (OSError, EOFError, zlib.error) as err:
            if gzipped:
                raise GradError(f"{path}: corrupt gzip data ({err})") from None
            raise GradError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None


def _read_up_to(stream, most: int) -> bytearray:
    """The rest of `stream`, read in chunks, stopping one byte past `most`: a longer result means the
    stream holds more than `most` bytes, found without reading an endless one to its end."""
    data = bytearray()
    while len(data) <= most:
        chunk = stream.read(min(_CHUNK, most + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def read_bytes(path: Path) -> bytearray:
    """All the bytes of a (possibly gzipped) file, refused once more than the memory limit."""
    limit = memory_limit()
    with _reading(path) as (stream, _):
        data = _read_up_to(stream, limit)
    refuse_oversize(len(data), f"{path}: decompressing the file", at_least=True)
    return data


def read_text(path: Path) -> str:
    """A (possibly gzipped) UTF-8 text file; a byte that is not UTF-8 is named with its line."""
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise GradError(f"{path}:{line}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file as an array: magic (0, 0, type, rank), rank big-endian uint32 sizes, then the data.
    The size the header declares is checked against the file and the memory limit before it is read."""
    path = Path(path)
    with _reading(path) as (stream, size):
        magic = stream.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
            raise GradError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
        code, rank = magic[2], magic[3]
        if code not in _IDX_TYPES:
            raise GradError(f"{path}: unknown IDX element type 0x{code:02x} in the magic number")
        if rank > IDX_MAX_RANK:
            raise GradError(f"{path}: the IDX header declares {rank} dimensions; at most {IDX_MAX_RANK} are supported")
        header = 4 + 4 * rank
        dims = stream.read(4 * rank)
        if len(dims) < 4 * rank:
            raise GradError(f"{path}: truncated IDX header (needs {header} bytes, file has {4 + len(dims)})")
        shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * rank, 4))
        dtype = np.dtype(_IDX_TYPES[code])
        nbytes = math.prod(shape) * dtype.itemsize
        declared = f"{path}: IDX header declares shape {shape} ({header + nbytes} bytes) but the file has"
        if size is not None and size != header + nbytes:
            raise GradError(f"{declared} {size} bytes")
        refuse_oversize(nbytes, f"{path}: the IDX data of shape {shape}")
        data = _read_up_to(stream, nbytes)
        if len(data) != nbytes:
            raise GradError(f"{declared} {header + len(data)} bytes" if len(data) < nbytes else f"{declared} more")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_npz(path: str | Path) -> dict:
    """The arrays of a NumPy .npz file by name. Only arrays of numbers are read: object arrays (pickles,
    which run code when loaded) and strings are refused, and each array's size is checked against its
    member and the memory limit before it is allocated; a file that is not a zip archive, or a damaged
    array, is named with its field."""
    path = Path(path)
    with open_regular(path) as (file, _):
        head = file.peek(4)[:4]
        if head[:2] != b"PK":
            raise GradError(f"cannot load {path}: not an NPZ file (an .npz is a zip archive of .npy arrays; this file "
                            f"starts with {head!r})")
        try:
            archive = zipfile.ZipFile(file)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
            # (NotImplementedError: a damaged directory naming a zip version this Python cannot read)
            raise GradError(f"cannot load {path}: not a readable NPZ file ({err})") from None
        with archive:
            return dict(_read_npy(archive, member, path) for member in archive.infolist())


def _read_npy(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> tuple[str, np.ndarray]:
    """One member of an .npz archive as (field name, array), as `numpy.load` names it (without `.npy`)."""
    name = member.filename.removesuffix(".npy")
    where = f"cannot load {path}: field {name!r}"
    try:
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream)
            if dtype.hasobject:
                raise GradError(f"{where} holds Python objects (pickled data), which gradlang never loads: "
                                "unpickling can run code")
            if dtype.kind not in NUMBER_KINDS:
                raise GradError(f"{where} holds {_KIND_NAMES.get(dtype.kind, dtype.kind)} ({dtype}); a data "
                                "field must hold numbers (booleans, integers or floats)")
            nbytes = math.prod(shape) * dtype.itemsize
            refuse_oversize(nbytes, f"{where}: its array of shape {shape}")
            if stream.tell() + nbytes != member.file_size:
                raise GradError(f"{where} is damaged (its header declares shape {shape} of {dtype}, {nbytes:,} "
                                f"bytes, but the member holds {member.file_size - stream.tell():,})")
            stream.seek(0)
            return name, np.lib.format.read_array(stream, allow_pickle=False)
    except NotImplementedError as err:   # zipfile: a compression method it cannot read
        raise GradError(f"{where} is stored with zip compression method {member.compress_type}, which cannot be "
                        f"read ({err}); store it with numpy.savez or numpy.savez_compressed") from None
    except (ValueError, OSError, EOFError, RuntimeError, SyntaxError, zipfile.BadZipFile, zlib.error,
            tokenize.TokenError) as err:
        raise GradError(f"{where} is damaged ({type(err).__name__}: {err})") from None


def _lines(text: str):
    """The lines of `text` with their endings (\\n, \\r\\n or \\r), one at a time, as `csv` reads them
    from a file opened with newline="" (an io.StringIO would hold the text again at 4 bytes a character)."""
    for match in re.finditer(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+", text):
        yield match.group()


def read_csv(path: str | Path, target: str | int | None = -1, header: bool = True,
             delimiter: str = ",", features=(), target_optional: bool = False,
             feature_count: int | None = None) -> dict:
    """A numeric CSV file: `x` = the `features` columns [n, k] (names in the header or indices from
    either end, in that order; none given: every column but the target), `y` = the `target` column [n]
    (integers stay integers: class labels), or only `x` when target is None.

    With `target_optional` (inputs to predict from), a file without the target column is read as
    features only: one whose header lacks the target's name, or, by position, one of exactly
    `feature_count` columns. Every field must be a finite number that fits a 32-bit float, and integer
    targets must be exact (below 2**53): a field that is not is named with its line and column and
    quoted as written."""
    path = Path(path)
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise GradError(f"{path}: the CSV delimiter must be one character (not a quote or line break), "
                        f"got {delimiter!r}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, str))):
        raise GradError(f"{path}: the target column must be a column name or an index, got {target!r}")
    reader = csv.reader(_lines(read_text(path)), delimiter=delimiter)
    most_values = memory_limit() // 8
    names, width, column, rows = None, None, None, 0
    values = array("d")      # 8 bytes a value, where a list of floats would take 32
    inexact_label = None     # (line, field) of the first target value too large to be an exact integer
    line = 1                 # where the row being read starts (blank lines and quoted line breaks count)
    try:
        for row in reader:
            if row and header and names is None:
                names = row
            elif row:
                if width is None:
                    width = len(row)
                    column = _target_column(path, target, names, width, target_optional, feature_count, features)
                if len(row) != width:
                    raise GradError(f"{path}:{line}: expected {width} fields, found {len(row)}")
                for j, field in enumerate(row):
                    number = _number(path, line, names, j, field)
                    if j == column and inexact_label is None and abs(number) >= EXACT_INTEGER:
                        inexact_label = (line, field)
                    values.append(number)
                rows += 1
                if len(values) > most_values:
                    refuse_oversize(8 * len(values), f"{path}:{line}: the values up to here", at_least=True)
            line = reader.line_num + 1
    except csv.Error as err:
        raise GradError(f"{path}:{line}: not a readable CSV file ({err})") from None
    if not rows:
        raise GradError(f"{path}: no data rows")
    table = np.frombuffer(values, dtype=np.float64).reshape(rows, width)
    chosen = _feature_columns(path, features, names, width, column)
    x = table[:, chosen] if chosen is not None else np.delete(table, column, axis=1) if column is not None \
        else table.copy()
    if column is None:
        return {"x": x}
    y = table[:, column].copy()   # not a view, which would keep the whole table alive beside x
    if np.all(y == np.round(y)):
        if inexact_label is not None:
            raise GradError(f"{path}:{inexact_label[0]}: field {_column_name(names, column)!r} is "
                            f"{inexact_label[1].strip()!r}, too large to be read exactly as an integer label "
                            "(labels must be below 2**53)")
        y = y.astype(np.int64)
    return {"x": x, "y": y}


def _feature_columns(path: Path, features, names: list[str] | None, width: int, target: int | None):
    """The indices of the `features` columns, in order (None: every column but the target)."""
    if not features:
        return None
    chosen = []
    for feature in features:
        if isinstance(feature, str):
            if names is None or feature not in names:
                raise GradError(f"{path}: no column named {feature!r} for the features"
                                + (f"; columns: {', '.join(names)}" if names else " (the file has no header)"))
            index = names.index(feature)
        elif isinstance(feature, int) and not isinstance(feature, bool):
            if not -width <= feature < width:
                raise GradError(f"{path}: feature column {feature} is out of range for {width} columns")
            index = feature % width
        else:
            raise GradError(f"{path}: a feature column is a column name or an index, got {feature!r}")
        if index == target:
            raise GradError(f"{path}: column {_column_name(names, index)!r} is both the target and a feature")
        if index in chosen:
            raise GradError(f"{path}: column {_column_name(names, index)!r} is named twice among the features")
        chosen.append(index)
    return chosen


def _column_name(names: list[str] | None, j: int) -> str:
    return names[j] if names is not None and j < len(names) else f"column {j + 1}"


def _target_column(path: Path, target: str | int | None, names: list[str] | None, width: int,
                   optional: bool = False, feature_count: int | None = None, features=()) -> int | None:
    """The index of the `target` column (a name in the header, or an index from either end), or None
    (no target, or an optional one the file lacks: see read_csv)."""
    if target is None:
        return None
    if isinstance(target, str):
        if names is None or target not in names:
            if optional and names is not None:
                return None
            raise GradError(f"{path}: no column named {target!r}"
                            + (f"; columns: {', '.join(names)}" if names else " (the file has no header)"))
        return names.index(target)
    if optional and not features and width == feature_count:
        return None
    if not -width <= target < width:
        raise GradError(f"{path}: target column {target} is out of range for {width} columns")
    return target % width


def _number(path: Path, line: int, names: list[str] | None, j: int, field: str) -> float:
    """A CSV field as a float, refused (naming its line and column, quoting it) unless it is a finite
    number within float32's range: NaN, infinity and overflow never enter the data."""
    try:
        number = float(field)
    except ValueError:
        raise GradError(f"{path}:{line}: field {_column_name(names, j)!r} is not a number: {field.strip()!r}") \
            from None
    if -FLOAT32_MAX <= number <= FLOAT32_MAX:
        return number
    why = ("not a finite number: NaN and infinity are not allowed in data (fill in a value or drop the row)"
           if math.isnan(number) or field.strip().lower().lstrip("+-") in ("inf", "infinity")
           else f"too large for a 32-bit float (at most ±{FLOAT32_MAX:.4g})")
    raise GradError(f"{path}:{line}: field {_column_name(names, j)!r} is {field.strip()!r}, {why}")


# ---- CIFAR-10, the binary version -------------------------------------------------------------------

CIFAR10_RECORD = 1 + 3 * 32 * 32   # a label byte, then 1024 red, 1024 green and 1024 blue bytes, each row-major 32×32
CIFAR10_CLASSES = 10
CIFAR10_META_BYTES = 4096          # batches.meta.txt holds ten short names


def read_cifar10_batch(path: str | Path, most: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A batch file of CIFAR-10's binary version (data_batch_1.bin … data_batch_5.bin, test_batch.bin) as
    (images: uint8 [n, 3, 32, 32], labels: uint8 [n]); `most` > 0 reads the first `most` records only.
    The file must be whole 3,073-byte records (a label byte, then the red, green and blue planes of
    32×32 pixels, row-major) and every label a class 0..9: one that is not is refused, naming the file
    and, for a label, the record."""
    path = Path(path)
    with open_regular(path) as (file, size):
        if size == 0 or size % CIFAR10_RECORD:
            raise GradError(f"{path}: not a CIFAR-10 batch file: its {size:,} bytes are not a whole number of "
                            f"{CIFAR10_RECORD:,}-byte records (a label byte, then 3 × 32 × 32 pixel bytes)")
        count = size // CIFAR10_RECORD if most <= 0 else min(most, size // CIFAR10_RECORD)
        nbytes = count * CIFAR10_RECORD
        data = _read_up_to(file, nbytes)
    if len(data) < nbytes:
        raise GradError(f"{path}: the file holds {len(data):,} bytes, fewer than the {size:,} it had when opened")
    records = np.frombuffer(data, np.uint8, count=nbytes).reshape(count, CIFAR10_RECORD)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels >= CIFAR10_CLASSES)
    if bad.size:
        raise GradError(f"{path}: record {bad[0]} (counting from 0) has label {labels[bad[0]]}, but CIFAR-10's labels "
                        f"are 0..{CIFAR10_CLASSES - 1}: not a CIFAR-10 batch file, or a damaged one")
    return records[:, 1:].reshape(count, 3, 32, 32), labels


def read_cifar10_classes(path: str | Path) -> list[str]:
    """CIFAR-10's batches.meta.txt: the names of classes 0..9, one a line (blank lines aside)."""
    path = Path(path)
    with open_regular(path) as (file, size):
        if size > CIFAR10_META_BYTES:
            raise GradError(f"{path}: {size:,} bytes is too long for CIFAR-10's ten class names (at most "
                            f"{CIFAR10_META_BYTES:,})")
        raw = file.read(CIFAR10_META_BYTES + 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GradError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != CIFAR10_CLASSES or len(raw) > CIFAR10_META_BYTES:
        raise GradError(f"{path}: expected CIFAR-10's {CIFAR10_CLASSES} class names, one a line, but found "
                        f"{len(names)} names")
    return names
