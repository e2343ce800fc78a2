"""The helper thread (ops/helper.py, the scheduler's "helper-thread" rewrite): a step computes the same
whether the helper runs its tasks at once, as late as it could, or not at all; kernels that share their
batch with it compute each part once; errors reach the step; the listing says what runs where."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.gradcheck import random_feed
from gradlang.lowering import schedule as scheduling
from gradlang.ops import helper

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = sorted(ROOT.glob("examples/*.grad")) + sorted(ROOT.glob("benchmarks/*.grad"))
PHASED = {"gan"}


@pytest.fixture
def two_cpus(monkeypatch):
    """The helper is used as on a machine with two CPUs, whatever this one has."""
    monkeypatch.setattr(helper, "cpus", lambda: 2)


@pytest.fixture
def eager_lanes(two_cpus, monkeypatch):
    """Every product large enough for the helper: the lanes of a real batch, on the small batches a
    test can afford."""
    monkeypatch.setattr(scheduling, "HELPER_MIN_US", 0)


def _results(path: Path, no_opt=()) -> tuple:
    prog = gradlang.compile(path, dtype="float64", seed=0, no_opt=no_opt)
    feed = random_feed(prog, 4, np.random.default_rng(0))
    gradients = prog.gradients(feed) if path.stem not in PHASED else {}
    losses = [prog.step(feed) for _ in range(2)]
    lanes = sum(len(e.schedule.helper_steps) for e in prog.runner.executables.values())
    return losses, gradients, {name: value.copy() for name, value in prog.params.items()}, lanes


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_the_step_is_the_same_whenever_the_helper_runs(path, eager_lanes):
    plain = _results(path, no_opt=("helper-thread",))
    assert plain[3] == 0
    at_once = _results(path)
    with helper.late():
        late = _results(path)
    assert at_once[3] == late[3]
    for got in (at_once, late):
        np.testing.assert_array_equal(got[0], plain[0])
        for part in (1, 2):
            for name in plain[part]:
                np.testing.assert_array_equal(got[part][name], plain[part][name], err_msg=name)


def test_the_deep_models_give_the_helper_work(eager_lanes):
    for name in ("cnn", "lstm", "attention", "mlp"):
        assert _results(ROOT / "benchmarks" / f"{name}.grad")[3] > 0, name


def test_a_batch_shared_with_the_helper_computes_each_part_once():
    seen: list = []
    lock = threading.Lock()

    def body(index):
        with lock:
            seen.append((index, threading.get_ident()))
        np.linalg.inv(np.eye(200) * (index + 1))   # something that releases the GIL
    helper.shared(body, 64)
    assert sorted(index for index, _ in seen) == list(range(64))


def test_an_error_in_a_shared_part_is_raised_and_the_rest_stop():
    started: list = []

    def body(index):
        started.append(index)
        if index == 3:
            raise ValueError("part 3")
    with pytest.raises(ValueError, match="part 3"):
        helper.shared(body, 1000)
    assert len(started) < 1000


def test_a_task_error_reaches_the_step_and_skips_the_tasks_after_it():
    ran: list = []

    def failing(values):
        raise FloatingPointError("in a task")

    def after(values):
        ran.append(True)
    for timing in (helper.late, lambda: helper.contextlib.nullcontext()):
        with timing():
            run = helper.StepRun(1)
            run.start(failing, ())
            run.start(after, ())
            with pytest.raises(FloatingPointError, match="in a task"):
                run.finish()
    assert ran == []


def test_the_listing_says_what_the_helper_runs(two_cpus, capsys):
    path = str(ROOT / "benchmarks" / "attention.grad")
    assert main(["ir", path, "--stage", "scheduled", "--batch", "32"]) == 0
    listing = capsys.readouterr().out
    assert " on the helper thread  # matmul" in listing and "queued to the helper thread" in listing
    assert main(["ir", path, "--stage", "scheduled", "--batch", "32", "--no-opt", "helper-thread"]) == 0
    assert "helper" not in capsys.readouterr().out


def test_the_helper_computes_stacked_chunks_the_step_sums_after_the_wait(two_cpus, capsys):
    """The LSTM's recurrent weight gradients are sums of stacked products (lowering/sums.py): the
    helper computes chunks of them, and the step adds the chunks up once it has waited for it."""
    path = str(ROOT / "benchmarks" / "lstm.grad")
    assert main(["ir", path, "--stage", "scheduled", "--batch", "32"]) == 0
    listing = capsys.readouterr().out
    assert any("= StackedProducts(" in line and "on the helper thread" in line for line in listing.splitlines())
    before, after = listing.split("# the step waits for the helper thread here\n")
    assert "on the helper thread" in before and "on the helper thread" not in after
    assert all("= SumOfParts(" in line for line in after.splitlines() if line.startswith("%"))


def test_one_cpu_gets_no_helper(monkeypatch, capsys):
    monkeypatch.setattr(helper, "cpus", lambda: 1)
    assert main(["ir", str(ROOT / "benchmarks" / "cnn.grad"), "--stage", "scheduled", "--batch", "64"]) == 0
    assert "helper" not in capsys.readouterr().out


def test_blas_threads_asked_for_mean_no_helper(two_cpus, monkeypatch):
    monkeypatch.setenv(helper.BLAS_THREADS_ENVIRONMENT, "2")
    assert not helper.usable(1)
    monkeypatch.setenv(helper.BLAS_THREADS_ENVIRONMENT, "1")
    assert helper.usable(1) and not helper.usable(helper.THREADED_MIN_WORK)


def _step_in_child(queue):
    prog = gradlang.compile(ROOT / "benchmarks" / "cnn.grad", seed=0)
    queue.put(prog.step(random_feed(prog, 8, np.random.default_rng(0))))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_starts_its_own_helper(two_cpus):
    prog = gradlang.compile(ROOT / "benchmarks" / "cnn.grad", seed=0)
    want = prog.step(random_feed(prog, 8, np.random.default_rng(0)))   # the parent's helper is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == want


RANDOM_READER = """
input x : f32[B, 256]
input y : i64[B]
param W1 : [256, 256] = he_normal
param W2 : [256, 10] = he_normal
h = relu(x @ W1)
loss1 = cross_entropy(h @ W2, y)
g = grad(loss1, W2)
loss = loss1 + 0.000001 * sum(dropout_mask(g, 0.5))
train { optimizer = sgd(lr: 0.05) }
"""


def test_a_weight_gradient_that_a_random_draw_reads_stays_with_the_step(eager_lanes):
    """dropout_mask draws numbers, so it stays with the step; the gradient it reads must too (the step
    never reads what the helper computes)."""
    results = []
    for no_opt in ((), ("helper-thread",)):
        prog = gradlang.compile(RANDOM_READER, dtype="float64", seed=0, no_opt=no_opt)
        feed = random_feed(prog, 256, np.random.default_rng(0))
        results.append((prog.step(feed), {k: v.copy() for k, v in prog.params.items()}))
    assert results[0][0] == results[1][0]
    for name, value in results[1][1].items():
        np.testing.assert_array_equal(results[0][1][name], value)


def test_the_helper_computes_under_the_steps_numpy_error_settings():
    def overflow(values):
        np.exp(np.full(1000, 1000.0))
    with np.errstate(over="raise"):
        run = helper.StepRun(1)
        run.start(overflow, ())
        with pytest.raises(FloatingPointError):
            run.finish()

    def part(index):
        if helper.on_helper():
            np.exp(np.full(1000, 1000.0))
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(20):   # whether the helper takes a part at all is up to timing; it must never warn
            helper.shared(part, 64)


def test_ctrl_c_while_waiting_for_the_helper_waits_until_it_is_done():
    busy = threading.Lock()
    busy.acquire()
    released = []

    def interrupt_then_release():
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        released.append(time.monotonic())
        busy.release()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_then_release).start()
        with pytest.raises(KeyboardInterrupt):
            helper._wait_for(busy)
        assert released, "the wait ended before the helper was done"
    finally:
        signal.signal(signal.SIGINT, previous)
