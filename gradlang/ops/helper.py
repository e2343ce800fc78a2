"""The helper thread: a second thread that a training step hands work to, so that two cores compute.

NumPy releases the GIL inside a BLAS product, a large ufunc or an array copy, so two Python threads
calling kernels run on two cores at once; only the few microseconds of dispatch between kernels
take turns. The step gives the helper two kinds of work (lowering/schedule.py, "helper-thread"):

- *tasks*: runs of kernels off the step's critical path (a weight gradient and its sum), queued as
  the step reaches them and run in the order queued; the step never reads what they compute, and
  waits for all of them before it returns;
- *shared chunks*: a kernel that works through the batch in chunks (a convolution) lets the helper
  take chunks from the same counter as itself. The kernel never waits for the helper to start: a
  busy or descheduled helper simply takes no chunks, so a loaded machine degrades to one thread
  instead of stalling, as a spinning BLAS pool does.

Waiting is blocking (a lock), never spinning. Results never depend on which thread computed what:
each chunk writes its own rows or its own partial sum, added in chunk order.
"""
from __future__ import annotations

import _thread
import contextlib
import itertools
import os
import queue
import threading

import numpy as np

# A step whose largest product has at least this many multiply-adds lets BLAS thread its products
# instead (runtime/threads.py), and gets no helper: two threads each running a threaded product would
# oversubscribe the cores. See docs/architecture.md for the measurement behind it.
THREADED_MIN_WORK = 1 << 27
# `GRADLANG_BLAS_THREADS=N`: every step runs its products on N BLAS threads (N > 1: no helper either).
BLAS_THREADS_ENVIRONMENT = "GRADLANG_BLAS_THREADS"

_tasks: queue.SimpleQueue | None = None
_ident: int | None = None    # the helper thread's id, once started
_late = False                # see `late`
_start_lock = threading.Lock()


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


def usable(largest_product: int) -> bool:
    """Whether a step whose largest product is `largest_product` multiply-adds should use the helper:
    the process may run on two CPUs, and BLAS runs each product on one thread."""
    return (cpus() >= 2 and largest_product < THREADED_MIN_WORK
            and os.environ.get(BLAS_THREADS_ENVIRONMENT, "") in ("", "1"))


def _serve(tasks: queue.SimpleQueue) -> None:
    while True:
        tasks.get()()


def _queue() -> queue.SimpleQueue:
    """The helper's queue, starting the thread on first use."""
    global _tasks, _ident
    if _tasks is None:
        with _start_lock:
            if _tasks is None:
                tasks = queue.SimpleQueue()
                thread = threading.Thread(target=_serve, args=(tasks,), name="gradlang-helper", daemon=True)
                thread.start()
                _ident, _tasks = thread.ident, tasks
    return _tasks


def _forget_after_fork() -> None:
    """A forked child has no helper thread (nor whoever held the start lock): the next use starts one."""
    global _tasks, _ident, _start_lock
    _tasks = _ident = None
    _start_lock = threading.Lock()


def _wait_for(lock) -> None:
    """Wait until `lock` is free, even if Ctrl-C interrupts the wait (it is raised once the wait is
    over): the helper may not be left writing into memory that the step hands back or reuses."""
    interrupted = None
    while True:
        try:
            lock.acquire()
            break
        except KeyboardInterrupt as err:
            interrupted = err
    lock.release()
    if interrupted is not None:
        raise interrupted


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def on_helper() -> bool:
    return _ident is not None and _thread.get_ident() == _ident


@contextlib.contextmanager
def late():
    """Within it, a step's helper tasks run when the step finishes, on the step's own thread: the
    latest the helper could run them. A schedule must compute the same either way (the tests check
    every program so): it may not overwrite what a task has yet to read. A switch for tests, for the
    whole process: not nestable, not per thread."""
    global _late
    _late = True
    try:
        yield
    finally:
        _late = False


class StepRun:
    """One run of a step's helper tasks: the values the helper keeps between tasks (by slot), the first
    error a task raised (the tasks after it are skipped), and the step's NumPy error settings, which
    are per thread (`np.errstate`): the helper computes under the step's."""

    __slots__ = ("values", "error", "last", "held", "errors")

    def __init__(self, n_slots: int):
        self.values: list = [None] * n_slots
        self.error: BaseException | None = None
        self.last: Task | None = None
        self.held: list | None = [] if _late else None   # tasks kept until the step finishes (`late`)
        self.errors = np.geterr()

    def start(self, function, args: tuple) -> Task:
        """Queue `function(values, *args)` on the helper."""
        task = Task(self, function, args)
        if self.held is None:
            _queue().put(task)
        else:
            self.held.append(task)
        self.last = task   # only once queued: `drain` waits for it
        return task

    def finish(self) -> None:
        """Wait for every task queued, and raise the first error one raised."""
        self.drain()
        if self.error is not None:
            raise self.error

    def drain(self) -> None:
        """Wait for every task queued (when the step failed, its own error is the one to raise)."""
        for task in self.held or ():
            task()
        if self.last is not None:
            self.last.wait()


class Task:
    __slots__ = ("run", "function", "args", "done")

    def __init__(self, run: StepRun, function, args: tuple):
        self.run, self.function, self.args = run, function, args
        self.done = _thread.allocate_lock()
        self.done.acquire()

    def __call__(self) -> None:   # on the helper thread
        run = self.run
        try:
            if run.error is None:
                with np.errstate(**run.errors):
                    self.function(run.values, *self.args)
        except BaseException as err:   # handed to the step, which raises it where it waits
            run.error = err
        finally:
            self.args = None
            self.done.release()

    def wait(self) -> None:
        """Return once this task has run (the tasks before it have run too)."""
        _wait_for(self.done)


def in_order(body, count: int) -> None:
    """Run body(0), …, body(count − 1) on this thread."""
    for index in range(count):
        body(index)


def shared(body, count: int) -> None:
    """Run body(0), …, body(count − 1), each once, on this thread and on the helper if it is free:
    both take the next index from one counter; returns when every body has returned."""
    if count < 2 or on_helper():
        in_order(body, count)
        return
    indices = itertools.count()    # next() on it is atomic under the GIL
    busy = _thread.allocate_lock()
    failed: list = []              # the first error either thread raised: both stop taking indices
    errors = np.geterr()           # per thread: the helper computes under the caller's

    def take() -> None:
        for index in iter(indices.__next__, None):
            if index >= count or failed:
                break
            body(index)

    def helper_share() -> None:
        with busy:                 # held while the helper takes indices, so that the caller can wait for it
            try:
                with np.errstate(**errors):
                    take()
            except BaseException as err:   # re-raised on the calling thread
                failed.append(err)

    _queue().put(helper_share)
    try:
        take()
    except BaseException as err:
        failed.append(err)
    _wait_for(busy)                # the helper, if it took an index, has finished with it
    if failed:
        raise failed[0]
