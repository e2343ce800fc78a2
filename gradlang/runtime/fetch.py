"""The data directory and `gradlang data fetch`: downloads with checksum verification.

The data directory holds one folder per data set with the files under their original names
(`<data dir>/mnist/train-images-idx3-ubyte.gz`, …; CIFAR-10's archive, `cifar10/cifar-10-binary.tar.gz`,
with its members unpacked beside it in `cifar10/cifar-10-batches-bin/`). It is `--data-dir`, else
`$GRADLANG_DATA`, else `~/.cache/gradlang`.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..errors import GradError

_CIFAR10_BATCH = range(3073, 10000 * 3073 + 1, 3073)   # whole records (a label byte, 3,072 pixels), at most 10,000
# What CIFAR-10's archive may hold: each member's name and the sizes allowed (None: the folder). An archive
# with any other member (`../x`, `/etc/x`, a link, a device, a name twice) is refused whole, unpacked nowhere.
CIFAR10_LAYOUT = {
    "members": {
        "cifar-10-batches-bin": None,
        **{f"cifar-10-batches-bin/data_batch_{i}.bin": _CIFAR10_BATCH for i in range(1, 6)},
        "cifar-10-batches-bin/test_batch.bin": _CIFAR10_BATCH,
        "cifar-10-batches-bin/batches.meta.txt": range(1, 4097),
        "cifar-10-batches-bin/readme.html": range(0, 1 << 16),
    },
    "optional": ("cifar-10-batches-bin/readme.html",),
}

DATASETS = {
    "mnist": {
        "url": "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "files": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        # each file's size: a download that goes past it is stopped, so a wrong or hostile server cannot
        # fill the disk before the checksum is checked
        "bytes": {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
                  "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542},
    },
    # the binary version only: the "python version" of CIFAR-10 is pickled batches, which gradlang never loads
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/",
        "files": {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        # the digest the data set's page (https://www.cs.toronto.edu/~kriz/cifar.html) publishes is an MD5
        "digest": "md5",
        "bytes": {"cifar-10-binary.tar.gz": 170052171},
        # a tar.gz unpacked into the data set's folder, member by member as its layout allows
        "unpack": {"cifar-10-binary.tar.gz": CIFAR10_LAYOUT},
    },
}


def data_dir(override: str | Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("GRADLANG_DATA")
    return Path(env) if env else Path.home() / ".cache" / "gradlang"


def sha256(path: Path) -> str:
    return checksum(path, "sha256")


def checksum(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file: SHA-256, or the MD5 a data set's source publishes (CIFAR-10's)."""
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, root: Path, url: str | None = None, log=print, timeout: float = 60.0) -> list[Path]:
    """Download data set `name` into `root/name/`, verifying each file's checksum (SHA-256, or the data set's
    `digest`); skip files already there. An archive the data set `unpack`s is unpacked there once verified."""
    if name not in DATASETS:
        raise GradError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    algorithm = spec.get("digest", "sha256")
    base = (url or os.environ.get(f"GRADLANG_{name.upper()}_URL") or spec["url"]).rstrip("/") + "/"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, digest in spec["files"].items():
        most = spec.get("bytes", {}).get(filename)
        target = folder / filename
        layout = spec.get("unpack", {}).get(filename)
        if target.exists() and checksum(target, algorithm) == digest:
            log(f"{target}: present, checksum ok")
            paths.append(target)
            if layout is not None:
                paths += unpack(target, folder, layout, log, again=False)
            continue
        log(f"downloading {base}{filename}")
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base + filename, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    if most is not None and out.tell() + len(block) > most:
                        raise GradError(f"{filename}: the download is longer than the file's {most:,} bytes; the "
                                        "URL serves other files")
                    out.write(block)
            got = checksum(Path(tmp), algorithm)
            if got != digest:
                raise GradError(f"{filename}: checksum mismatch (expected {algorithm} {digest}, got {got}); "
                                "the download is corrupt or the URL serves other files")
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError) as err:
            raise GradError(f"cannot download {base}{filename}: {getattr(err, 'reason', err)}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        log(f"{target}: ok")
        paths.append(target)
        if layout is not None:
            paths += unpack(target, folder, layout, log)
    return paths


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return f"a link to {member.linkname!r}"
    if member.isdir() or member.isreg():
        return "a folder" if member.isdir() else "a regular file"
    return "a device, FIFO or other special file"


def unpack(archive: Path, folder: Path, layout: dict, log=print, again: bool = True) -> list[Path]:
    """Unpack the (verified) tar.gz `archive` into `folder` and return the files it wrote. The archive is
    refused whole, and nothing of it is written, unless each member is one that `layout["members"]` names,
    exactly (so no name climbs out of `folder`), once, of the kind and size allowed there (a folder, or a
    regular file: never a link or a device), and every member not `optional` is there. The members' bytes
    go to a temporary folder beside and are moved into place when the whole archive has passed. Without
    `again`, an archive whose files are all in place, of allowed sizes, is not unpacked a second time."""
    members, optional = layout["members"], set(layout.get("optional", ()))
    files = {member: folder / member for member, sizes in members.items() if sizes is not None}
    required = [member for member in files if member not in optional]
    if not again and all(files[m].is_file() and files[m].stat().st_size in members[m] for m in required):
        log(f"{archive}: unpacked already")
        return [path for path in files.values() if path.is_file()]
    log(f"unpacking {archive.name}")
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{archive.name}.", suffix=".part"))
    try:
        seen = set()
        try:
            with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    where = f"{archive}: member {member.name!r}"
                    if member.name not in members:
                        raise GradError(f"{where} is not one this archive holds (only {', '.join(members)}); the "
                                        "archive is refused and nothing of it is unpacked")
                    if member.name in seen:
                        raise GradError(f"{where} comes twice; the archive is refused")
                    seen.add(member.name)
                    sizes = members[member.name]
                    if sizes is None:
                        if not member.isdir():
                            raise GradError(f"{where} should be a folder but is {_kind(member)}; the archive is "
                                            "refused")
                        continue
                    if not member.isreg():
                        raise GradError(f"{where} should be a regular file but is {_kind(member)}; the archive is "
                                        "refused")
                    if member.size not in sizes:
                        allowed = (f"a multiple of {sizes.step:,} bytes from {sizes.start:,} to {sizes[-1]:,}"
                                   if sizes.step > 1 else f"{sizes.start:,} to {sizes[-1]:,} bytes")
                        raise GradError(f"{where} holds {member.size:,} bytes, but it must hold {allowed}; the "
                                        "archive is refused")
                    written = staging / member.name          # a name of `layout`, checked above
                    written.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as source, open(written, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    if written.stat().st_size != member.size:
                        raise GradError(f"{where} is cut short; the archive is refused")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise GradError(f"{archive}: not a readable tar.gz archive ({err})") from None
        except OSError as err:
            raise GradError(f"cannot unpack {archive} into {folder}: {err.strerror or err}") from None
        absent = [member for member in required if member not in seen]
        if absent:
            raise GradError(f"{archive}: member {absent[0]!r} is missing; the archive is refused")
        done = []
        for member, target in files.items():
            if (staging / member).exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / member, target)
                done.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{archive}: unpacked {len(done)} files into {folder}")
    return done
