"""Freed memory kept for the next training step (runtime/allocator.py): a step of large arrays stops
page-faulting them in; the environment can opt out, and a threshold the environment set is kept.
Each case runs in a fresh process: the setting is process-wide and made once."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the thresholds are glibc's")

STEP_FAULTS = """
import resource
import numpy as np
import gradlang
from gradlang.gradcheck import random_feed
from gradlang.runtime import allocator
prog = gradlang.compile({path!r}, seed=0)
feed = random_feed(prog, 64, np.random.default_rng(0))
for _ in range(3):
    prog.step(feed)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    prog.step(feed)
print(allocator.keep_freed_memory(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def _run(source: str, **environment) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GRADLANG_KEEP_MEMORY"}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, env=env, cwd=ROOT)


@glibc_only
def test_a_training_step_of_large_arrays_stops_faulting_pages_in():
    """The MNIST CNN step at batch 64 frees and allocates megabytes of windows every step: with the
    memory kept, the steps after the first fault (almost) no pages in; without, thousands here."""
    script = STEP_FAULTS.format(path=str(ROOT / "benchmarks" / "cnn.grad"))
    kept = _run(script)
    assert kept.returncode == 0, kept.stderr
    applied, faults = kept.stdout.split()
    assert applied == "True" and int(faults) < 100
    left = _run(script, GRADLANG_KEEP_MEMORY="0")
    assert left.returncode == 0 and left.stdout.split()[0] == "False", left.stderr


@glibc_only
@pytest.mark.parametrize("setting", [{"MALLOC_TRIM_THRESHOLD_": "1000000"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_a_threshold_the_environment_set_is_left_alone(setting):
    probe = "from gradlang.runtime import allocator; print(allocator.keep_freed_memory())"
    result = _run(probe, **setting)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_the_setting_is_refused_unless_0_or_1(monkeypatch):
    from gradlang import GradError
    from gradlang.runtime import allocator
    monkeypatch.setenv(allocator.ENVIRONMENT, "yes")
    with pytest.raises(GradError, match="GRADLANG_KEEP_MEMORY must be 0 or 1, got 'yes'"):
        allocator.wanted()
