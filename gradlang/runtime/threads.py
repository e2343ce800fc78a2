"""How many threads BLAS may use while a step runs.

OpenBLAS splits a product over its threads once the product is large enough, and its threads then
wait on each other: on small products that costs more than it gains, and when another process keeps
a core busy a multi-threaded step collapses (the MLP benchmark step ran about 9× slower with its two
threads under `--contended`). A step whose largest product is below `THREADED_MIN_WORK` multiply-adds
(but large enough for OpenBLAS to thread at all) therefore runs with one BLAS thread, set just before
the step and restored right after, so that NumPy code around gradlang keeps its own setting; a step
with a larger product uses the threads BLAS was given. `GRADLANG_BLAS_THREADS=N` makes every step
use N threads instead.

The thread count is set through OpenBLAS's own function, found in the library NumPy loaded (Linux:
/proc/self/maps). Where it is not found (another BLAS, another system), steps run as BLAS is set.
"""
from __future__ import annotations

import ctypes
import os

from ..errors import GradError
from ..ops.helper import BLAS_THREADS_ENVIRONMENT, THREADED_MIN_WORK  # THREADED_MIN_WORK: see the docstring

# OpenBLAS itself runs a product of fewer multiply-adds than this on one thread (its SMP threshold,
# 65,536 × GEMM_MULTITHREAD_THRESHOLD = 4): a step made only of such products needs no setting at all.
BLAS_THREADS_ANYWAY = 1 << 18
ENVIRONMENT = BLAS_THREADS_ENVIRONMENT
# the prefixes and suffixes OpenBLAS's functions carry in NumPy's wheels (scipy-openblas, 64-bit
# integers or not) and in a system OpenBLAS
_NAMINGS = (("scipy_openblas_", "64_"), ("scipy_openblas_", ""), ("openblas_", "64_"), ("openblas_", ""))


def _openblas():
    """OpenBLAS's (get, set) thread-count functions and its core-name function in the library this
    process loaded, or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _NAMINGS:
            get, set_, core = (f"{prefix}{name}{suffix}" for name in ("get_num_threads", "set_num_threads",
                                                                       "get_corename"))
            if hasattr(library, get) and hasattr(library, set_):
                getter, setter = getattr(library, get), getattr(library, set_)
                getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
                corename = getattr(library, core, None)
                if corename is not None:
                    corename.restype = ctypes.c_char_p
                return getter, setter, corename
    return None


_FOUND = _openblas()
_CONTROL = _FOUND[:2] if _FOUND else None


def requested() -> int | None:
    """The thread count `GRADLANG_BLAS_THREADS` asks for, or None; refused unless a positive integer."""
    text = os.environ.get(ENVIRONMENT)
    if text is None or text == "":
        return None
    if not text.isdigit() or int(text) < 1:
        raise GradError(f"{ENVIRONMENT} must be a positive integer (a number of threads), got {text!r}")
    return int(text)


def step_threads(largest_product: int) -> int | None:
    """The BLAS threads for a step whose largest product is `largest_product` multiply-adds; None:
    leave BLAS as it is (no call around the step: a step of tiny products, which BLAS runs on one
    thread anyway, or one large enough to gain from more)."""
    if _CONTROL is None:
        return None
    wanted = requested()
    if wanted is not None:
        return wanted
    return 1 if BLAS_THREADS_ANYWAY <= largest_product < THREADED_MIN_WORK else None


class WithThreads:
    """A step (a callable) run with BLAS limited to `threads`, the previous count restored after."""

    __slots__ = ("run", "threads")

    def __init__(self, run, threads: int):
        self.run, self.threads = run, threads

    def __call__(self, *args):
        get, set_ = _CONTROL
        before = get()
        if before == self.threads:
            return self.run(*args)
        set_(self.threads)
        try:
            return self.run(*args)
        finally:
            set_(before)


def controllable() -> bool:
    return _CONTROL is not None


def blas_kernels() -> str | None:
    """The kernels OpenBLAS runs the products on ("Haswell": AVX2, "SkylakeX": AVX-512, …), as it
    chose them for this CPU or as OPENBLAS_CORETYPE told it; None where that is not known."""
    if _FOUND is None or _FOUND[2] is None:
        return None
    name = _FOUND[2]()
    return name.decode("ascii", "replace").strip() if name else None
