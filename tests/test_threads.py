"""BLAS threads during a step (runtime/threads.py): one for small products, restored afterwards, and
what GRADLANG_BLAS_THREADS asks for."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang import GradError
from gradlang.runtime import threads

ROOT = Path(__file__).resolve().parent.parent
needs_control = pytest.mark.skipif(not threads.controllable(),
                                   reason="OpenBLAS's thread functions were not found in this process")


def test_the_largest_product_of_a_step_is_known_at_schedule_time():
    prog = gradlang.compile(ROOT / "benchmarks" / "mlp.grad")
    feed = {"x": np.zeros((128, 784), np.float32), "y": np.zeros(128, np.int64)}
    prog.step(feed)
    (exe,) = [e for e in prog.runner.executables.values() if e.schedule.largest_product]
    assert exe.schedule.largest_product == 128 * 784 * 128    # the first layer's product, and its gradient's


@needs_control
def test_a_step_of_small_products_runs_on_one_thread_and_restores_the_count(monkeypatch):
    get, set_ = threads._CONTROL
    monkeypatch.delenv(threads.ENVIRONMENT, raising=False)
    before = get()
    set_(2)
    try:
        assert threads.step_threads(1000) is None     # BLAS runs it on one thread anyway: nothing to set
        assert threads.step_threads(threads.BLAS_THREADS_ANYWAY) == 1
        assert threads.step_threads(threads.THREADED_MIN_WORK) is None   # large: BLAS keeps its setting
        seen = threads.WithThreads(lambda: get(), 1)()
        assert seen == 1 and get() == 2
        with pytest.raises(ZeroDivisionError):                              # restored on an error too
            threads.WithThreads(lambda: 1 / 0, 1)()
        assert get() == 2
    finally:
        set_(before)


@needs_control
def test_the_environment_sets_the_threads_of_every_step(monkeypatch):
    monkeypatch.setenv(threads.ENVIRONMENT, "3")
    assert threads.step_threads(10) == 3 and threads.step_threads(10 ** 12) == 3
    for wrong in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(threads.ENVIRONMENT, wrong)
        with pytest.raises(GradError, match="GRADLANG_BLAS_THREADS must be a positive integer"):
            threads.step_threads(10)


def _has_avx() -> bool:
    try:
        return " avx " in Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False


@pytest.mark.skipif(not threads.controllable() or platform.machine().lower() not in ("x86_64", "amd64")
                    or not _has_avx(), reason="needs NumPy on OpenBLAS on an x86-64 CPU with AVX")
def test_the_blas_kernels_are_those_openblas_runs():
    """The benchmark names the kernels NumPy's products ran on: OpenBLAS's own choice, or what
    OPENBLAS_CORETYPE forced (Sandybridge: AVX's)."""
    probe = "from gradlang.runtime.threads import blas_kernels; print(blas_kernels())"
    assert threads.blas_kernels()
    environment = dict(os.environ, OPENBLAS_CORETYPE="Sandybridge")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment)
    assert result.returncode == 0 and result.stdout.strip() == "Sandybridge", result.stderr
