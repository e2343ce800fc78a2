"""The data directory and `gradlang data fetch`: downloads with checksum verification.

The data directory holds one folder per data set with the files under their original names
(`<data dir>/mnist/train-images-idx3-ubyte.gz`, …). It is `--data-dir`, else `$GRADLANG_DATA`, else
`~/.cache/gradlang`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import GradError

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
}


def data_dir(override: str | Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("GRADLANG_DATA")
    return Path(env) if env else Path.home() / ".cache" / "gradlang"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, root: Path, url: str | None = None, log=print, timeout: float = 60.0) -> list[Path]:
    """Download data set `name` into `root/name/`, verifying each file's SHA-256; skip files already there."""
    if name not in DATASETS:
        raise GradError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    base = (url or os.environ.get(f"GRADLANG_{name.upper()}_URL") or spec["url"]).rstrip("/") + "/"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, digest in spec["files"].items():
        most = spec.get("bytes", {}).get(filename)
        target = folder / filename
        if target.exists() and sha256(target) == digest:
            log(f"{target}: present, checksum ok")
            paths.append(target)
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
            got = sha256(Path(tmp))
            if got != digest:
                raise GradError(f"{filename}: checksum mismatch (expected sha256 {digest}, got {got}); "
                                "the download is corrupt or the URL serves other files")
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError) as err:
            raise GradError(f"cannot download {base}{filename}: {getattr(err, 'reason', err)}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        log(f"{target}: ok")
        paths.append(target)
    return paths
