"""Data-parallel training over MPI (mpi4py): K processes ("ranks") train one model together.

Every rank holds the whole model and the whole data set and walks the same shuffled order of global
batches (the program's seeded generator is the same everywhere). For each global batch of N examples,
rank r computes the loss and gradients on its contiguous share of n_r examples with the program's own
compiled step, scales them by n_r / N, and one `Allreduce` (sum) over one preallocated flat buffer —
every gradient and the loss, end to end — gives every rank the gradient of the mean loss over the
whole batch. Every rank then applies the same optimizer update, so the params stay identical without
ever being sent again. For a loss that is a mean over examples (plus terms of the params alone) this
is exactly the K = 1 gradient, shares of unequal size included.

Also synchronised: the params, broadcast from rank 0 when training starts (and checked: every rank
must agree on the data's size, the batch size and the step count), and evaluation (validation, final
and test metrics are sums over each rank's share, added up across ranks and divided by the total
count). Random ops inside a step (dropout) draw from a stream of each rank's own, derived from the
seed, the rank and the step, so the common generator that orders the batches never drifts apart.

Every collective is non-blocking and polled against a deadline (`timeout`): a rank that died or hangs
makes the others raise `CollectiveFailure` instead of waiting forever; `gradlang run` then prints it
and aborts the whole job. Start-up (MPI_Init, when mpi4py.MPI is first imported) cannot be polled, so
a watchdog process bounds it by the same deadline. Only rank 0 writes checkpoints (atomically), so the
last one stays valid.

Importing this module does not import mpi4py; `from_environment` does, and only under an MPI
launcher or when asked to.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ..errors import GradError
from ..ops import registry

DEFAULT_TIMEOUT = 300.0   # seconds a rank waits for the others in one collective
TIMEOUT_VARIABLE = "GRADLANG_MPI_TIMEOUT"
INSTALL_HINT = "pip install 'gradlang[mpi]' (or, from a clone, pip install -e '.[mpi]')"

# What MPI launchers put in each process's environment: the world size where they say it, else a rank.
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


class CollectiveFailure(GradError):
    """A collective operation did not complete: another rank died, hangs, or the connection to it broke."""


def launcher_size(environ=None) -> int | None:
    """How many processes an MPI launcher (mpirun, mpiexec, srun) started, from the environment it sets;
    0 when a launcher is evident but does not say how many; None when there is no launcher."""
    environ = os.environ if environ is None else environ
    sizes = [int(environ[v]) for v in _SIZE_VARIABLES if environ.get(v, "").isdigit()]
    if sizes:
        return max(sizes)
    return 0 if any(v in environ for v in _RANK_VARIABLES) else None


def launcher_rank(environ=None) -> int | None:
    """This process's rank as the MPI launcher set it in the environment; None when it does not say."""
    environ = os.environ if environ is None else environ
    ranks = [int(environ[v]) for v in _RANK_VARIABLES if environ.get(v, "").isdigit()]
    return ranks[0] if ranks else None


# The start-up watchdog, a separate Python process: it waits for end of file on its stdin — the rank
# closes the pipe once MPI has started, or dies — and past the deadline prints the message and kills
# the rank, whose launcher then ends the job.
_WATCHDOG = """
import os, signal, sys, threading, time
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
waiting = threading.Thread(target=sys.stdin.buffer.read, daemon=True)
waiting.start()
waiting.join(seconds)
if waiting.is_alive():
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    time.sleep(0.5)   # let the launcher relay the message before the job is torn down
    os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
"""


@contextmanager
def _start_up_deadline(timeout: float):
    """End this process, saying why, if the block (MPI's start-up) takes longer than `timeout`.

    MPI_Init waits for every rank to start, in C and holding the GIL: no thread of this process runs
    meanwhile, and no signal handler either, so a rank stopped or lost during start-up would leave the
    others waiting for ever. A watchdog process (a fresh Python, a few milliseconds) keeps the time."""
    rank, size = launcher_rank(), launcher_size()
    who = f"rank {rank} of {size}" if rank is not None and size else "this rank"
    message = (f"error: {who}: the other ranks did not join MPI's start-up within {timeout:g} s; a rank has died "
               f"or hangs, so the job stops (--mpi-timeout or ${TIMEOUT_VARIABLE} sets the wait)")
    watchdog = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), repr(timeout), message],
                                stdin=subprocess.PIPE)
    try:
        yield
    finally:
        watchdog.stdin.close()
        watchdog.wait()


def _import_mpi(timeout: float):
    """mpi4py's MPI module. Importing it the first time starts MPI, which waits for every rank: that
    wait is bounded by `timeout`, as a collective's is."""
    started = "mpi4py.MPI" in sys.modules
    with nullcontext() if started else _start_up_deadline(timeout):
        from mpi4py import MPI
    return MPI


def find_mpiexec() -> str | None:
    """The `mpiexec` beside this Python (where the mpich wheel puts it, in a venv or not), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def default_timeout(environ=None) -> float:
    environ = os.environ if environ is None else environ
    text = environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise GradError(f"{TIMEOUT_VARIABLE} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise GradError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def from_environment(requested: bool | None = None, timeout: float | None = None) -> DataParallel | None:
    """The data-parallel context for this process, or None to train alone.

    `requested` None (automatic): distributed exactly when an MPI launcher started more than one
    process; True: always (mpi4py must be installed; one process is allowed); False: never.
    """
    if requested is False:
        return None
    size = launcher_size()
    if requested is None and (size is None or size == 1):
        return None
    timeout = default_timeout() if timeout is None else timeout
    try:
        MPI = _import_mpi(timeout)
    except ImportError:
        why = "--distributed was given" if requested else \
            f"an MPI launcher started {size or 'several'} processes"
        raise GradError(f"{why}, but mpi4py is not installed: {INSTALL_HINT}; or pass --no-distributed "
                        "to train in each process alone") from None
    parallel = DataParallel(MPI.COMM_WORLD, timeout)
    if size and parallel.size != size:
        raise GradError(f"the launcher started {size} processes but MPI sees {parallel.size}: mpi4py uses a "
                        "different MPI than the launcher, or under Slurm srun was not told how (srun --mpi=pmix or "
                        "--mpi=pmi2); --no-distributed trains in each process alone")
    if requested is None and parallel.size == 1:
        return None
    return parallel


class DataParallel:
    """One rank's side of data-parallel training: shares of batches, the gradient all-reduce, the
    start-up broadcast and reductions of evaluation sums. Set `program.distributed` to one."""

    def __init__(self, comm=None, timeout: float = DEFAULT_TIMEOUT, poll_interval: float = 0.0001):
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        MPI = _import_mpi(self.timeout)
        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # seconds between polls of a collective: sleeping, not spinning, lets the other ranks on a busy
        # machine run, which made a 2 MB all-reduce between two ranks on 2 loaded cores faster than MPI's
        # own blocking call (4.3 ms against 6-8 ms; spinning: 31 ms)
        self.poll_interval = poll_interval
        self._flat = None                  # [gradients of every param…, loss], reused every step
        self._views: list[np.ndarray] = []
        self._random_graphs: dict[int, bool] = {}
        self.step_label = ""               # where training is, for a timeout's message

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that prints, writes checkpoints and saves params."""
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """The rows [lo, hi) of n examples that this rank takes: contiguous, sizes differing by at most 1."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    # ---- collectives with a deadline ------------------------------------------------------------
    def _wait(self, request, what: str) -> None:
        """Poll a non-blocking collective until it completes or `timeout` passes."""
        deadline = time.monotonic() + self.timeout
        while not self._test(request, what):
            if time.monotonic() > deadline:
                raise CollectiveFailure(
                    f"rank {self.rank} of {self.size}: the other ranks did not join the {what}"
                    f"{self.step_label} within {self.timeout:g} s; a rank has died or hangs, so the job stops "
                    f"(the last checkpoint written is intact; --mpi-timeout or ${TIMEOUT_VARIABLE} sets the wait)")
            time.sleep(self.poll_interval)

    def _test(self, request, what: str) -> bool:
        try:
            return request.Test()
        except self._mpi.Exception as err:   # MPI noticed a lost connection: as fatal as a timeout
            raise CollectiveFailure(f"rank {self.rank} of {self.size}: the {what}{self.step_label} failed "
                                    f"({err.Get_error_string()}); the job stops") from None

    def allreduce(self, buffer: np.ndarray, op, what: str) -> np.ndarray:
        """Combine `buffer` over all ranks with `op` (MPI.SUM, MPI.MAX), in place."""
        self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=op), what)
        return buffer

    def broadcast(self, buffer: np.ndarray, what: str) -> np.ndarray:
        """Overwrite `buffer` with rank 0's, in place."""
        self._wait(self.comm.Ibcast(buffer, root=0), what)
        return buffer

    def abort(self, message: str, code: int = 1) -> None:
        """Print `message` (from rank 0 as it is, from others tagged with the rank) and end every rank now."""
        text = message if self.is_root else f"[rank {self.rank}] {message}"
        print(text, file=sys.stderr, flush=True)
        # The launcher relays a rank's output through its proxy, and Abort tears the proxies down: give
        # the message a moment to get through first, or it can be lost on a busy machine.
        time.sleep(0.5)
        self.comm.Abort(code)

    # ---- training -------------------------------------------------------------------------------
    def start(self, runner, examples: int, batch_size: int) -> None:
        """Check that every rank runs the same job (`runner`: the program's Runner, runner.py), then give
        every rank rank 0's params."""
        if runner.phases:
            raise GradError("data-parallel training of a program with training phases is not supported; "
                            "run it in one process (--no-distributed)")
        if runner.state_names:   # batch norm: each rank would normalise by its own share's statistics
            raise GradError(f"data-parallel training of a program with state ({', '.join(runner.state_names)}) is "
                            "not supported: each rank would compute its own batch statistics from its share of "
                            "the batch, and averaging the ranks' new state is not what one process computes; "
                            "run it in one process (--no-distributed)")
        params = runner.param_list
        facts = np.array([examples, batch_size, runner.steps_taken, len(params), sum(p.size for p in params)],
                         dtype=np.float64)
        extremes = self.allreduce(np.concatenate([facts, -facts]), self._mpi.MAX, "start-up check")
        high, low = extremes[:len(facts)], -extremes[len(facts):]
        if not (np.array_equal(high, facts) and np.array_equal(low, facts)):
            what = ("training examples", "batch size", "steps taken", "params", "param values")
            differ = ", ".join(f"{w} from {int(lo)} to {int(hi)}" for w, lo, hi in zip(what, low, high) if lo != hi)
            raise GradError(f"the ranks disagree about the job ({differ}); do all machines have the same data, "
                            "program and checkpoint?")
        dtype = _common_dtype(params)
        flat = np.empty(int(facts[-1]), dtype=dtype)
        _pack(params, flat)
        self.broadcast(flat, "broadcast of the initial params")
        _unpack(flat, params)

    def loss_and_gradients(self, runner, arrays: list) -> list:
        """The loss and every param's gradient over the global batch `arrays` (the same on every rank),
        from this rank's share of it: [loss, gradient…], as `Runner.step` hands to the optimizer."""
        params = runner.param_list
        if self._flat is None:
            self._flat = np.empty(sum(p.size for p in params) + 1, dtype=_common_dtype(params))
            self._views, offset = [], 0
            for p in params:
                self._views.append(self._flat[offset:offset + p.size].reshape(p.shape))
                offset += p.size
        weight, share = self._batch_share(runner, arrays)
        if weight == 0.0:      # no examples for this rank in this batch: it adds nothing
            self._flat[...] = 0
        else:
            with self._own_random_stream(runner, runner.graphs.gradient_graph(), "step"):
                values = runner.loss_and_gradients(share)
            scale = self._flat.dtype.type(weight)
            for view, value in zip(self._views, values[1:]):
                np.multiply(value, scale, out=view)
            self._flat[-1] = float(values[0]) * weight
        self.step_label = f" at step {runner.steps_taken + 1}"
        self.allreduce(self._flat, self._mpi.SUM, "gradient all-reduce")
        return [self._flat[-1], *self._views]

    def evaluation_sums(self, runner, arrays: dict, batch_size: int) -> tuple[np.ndarray, float]:
        """Sums of the loss and metrics over a data set (each value × its batch's size) and the count,
        added up over every rank's share."""
        names = list(arrays)
        if names and _shardable(runner, names):
            lo, hi = self.share(len(arrays[names[0]]))
            arrays = {k: v[lo:hi] for k, v in arrays.items()}
        with self._own_random_stream(runner, runner.graphs.forward_graph, "evaluation"):
            totals, count = runner.evaluation_sums(arrays, batch_size)
        buffer = self.allreduce(np.append(totals, count).astype(np.float64), self._mpi.SUM, "evaluation reduction")
        return buffer[:-1], float(buffer[-1])

    def _batch_share(self, runner, arrays: list) -> tuple[float, list]:
        """(this rank's weight n_r / N, its rows of the global batch). Inputs without a batch dimension
        cannot be split: then every rank takes the whole batch, with weight 1 / K."""
        names = [name for name, a in zip(runner.input_names, arrays) if a is not None]
        if not names or not _shardable(runner, names):
            return 1.0 / self.size, arrays
        n = len(next(a for a in arrays if a is not None))
        lo, hi = self.share(n)
        return (hi - lo) / n, [None if a is None else a[lo:hi] for a in arrays]

    @contextmanager
    def _own_random_stream(self, runner, graph, purpose: str):
        """Let random ops draw from this rank's own stream (seed, rank, step, purpose), then put back the
        program's common generator as it was, so every rank shuffles the same way."""
        key = id(graph)
        if key not in self._random_graphs:
            self._random_graphs[key] = any(registry.get(d["op"]).random for _, d in graph.nx.nodes(data=True))
        if not self._random_graphs[key]:
            yield
            return
        generator = runner.rng.bit_generator
        common = generator.state
        stream = np.random.default_rng([runner.seed % (1 << 64), self.rank, runner.steps_taken,
                                        0 if purpose == "step" else 1])
        generator.state = stream.bit_generator.state
        try:
            yield
        finally:
            generator.state = common


def _shardable(runner, names: list[str]) -> bool:
    """Whether every fed input has a symbolic first dimension (a batch that can be split by rows)."""
    inputs = runner.inputs
    return all(inputs[name].shape and isinstance(inputs[name].shape[0], str) for name in names)


def _common_dtype(params: list[np.ndarray]):
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        raise GradError(f"data-parallel training needs params of one float type, found {sorted(map(str, dtypes))}")
    return dtypes.pop() if dtypes else np.dtype(np.float64)


def _pack(arrays: list[np.ndarray], flat: np.ndarray) -> None:
    offset = 0
    for a in arrays:
        flat[offset:offset + a.size] = a.ravel()
        offset += a.size


def _unpack(flat: np.ndarray, arrays: list[np.ndarray]) -> None:
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size
