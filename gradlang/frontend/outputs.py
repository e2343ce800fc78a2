"""Where a program's own outputs go: the files its `train` block names (`save`, `checkpoint`) must lie
below the program's folder once every symbolic link on the way is followed, so that a model file
shipped with a link beside it (`out -> /home/you`) cannot write elsewhere.

Compilation already refuses absolute paths, `..` and `~` (frontend/plan.py, without touching the disk);
this check looks at the disk, once, when the program is compiled. Paths given on the command line or
to `Program.train` are the user's own choice and are not checked here.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GradError, Span

OUTPUT_SETTINGS = ("save", "checkpoint")


def resolve_output(folder: Path, setting: str, value: str, span: Span | None) -> Path:
    """The absolute path `setting = value` writes to, or an error at the setting when it leaves `folder`
    (through a link, or by naming the folder itself) or names an existing folder."""
    root = folder.resolve()
    try:
        path = (root / value).resolve()
        is_folder = path.is_dir()
    except (OSError, RuntimeError, ValueError) as err:   # a NUL byte, a loop of links, a name too long
        raise GradError(f"{setting} = {value!r} is not a usable file name: {getattr(err, 'strerror', None) or err}",
                        span) from None
    if is_folder:
        example = "model.npz" if path == root else f"{value.rstrip('/')}/model.npz"
        raise GradError(f"{setting} = {value!r} names the folder {path}; give a file name, such as {example!r}", span)
    if not path.is_relative_to(root):
        raise GradError(f"{setting} = {value!r} resolves to {path}, outside the program's folder {root}; a program "
                        f"may only write below its own folder (to write elsewhere, use --out or --checkpoint)", span)
    return path
