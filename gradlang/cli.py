"""The `gradlang` command.

    gradlang run FILE [--json] [--steps N | --epochs N] [--batch N] [--seed N] [--out PATH] [--quiet]
                      [--data-dir DIR] [--checkpoint PATH] [--resume] [--plot PNG] [--float64]
                      [--distributed | --no-distributed] [--mpi-timeout SECONDS]   (mpirun -n K gradlang run …)
    gradlang eval FILE --params P [--data NAME] [--json]
    gradlang predict FILE --params P (--input FILE.npz|.csv | --data NAME) [--out PATH] [--json]
    gradlang ir FILE [--grad] [--stage parsed|elaborated|grad|optimized] [--format text|dot|json]
                     [--stats] [--cost [--batch N]] [--png PATH | --svg PATH] [--no-locations]
    gradlang grad FILE
    gradlang trace FILE [--batch N | --input X.npz] [--params P] [--loss NAME] [--format text|json] [--png|--svg PATH]
    gradlang gradcheck FILE [--per-op] [--random] [--batch N] [--tolerance T] [--seed N] [--json]
    gradlang check FILE [--json]
    gradlang data fetch NAME [--url URL] [--data-dir DIR]
    gradlang lsp [--stdio] [--debounce SECONDS]
    gradlang sample FILE --params P [--prime TEXT] [--length N] [--temperature T] [--seed N] [--output NAME]
    gradlang export FILE --params P --onnx OUT.onnx [--output NAME …] [--batch N]
    gradlang fmt FILE|DIR|- … [--check] [--diff]

Errors in the program print as `file:line:col: error: …` with the line and a caret, and exit 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import traceback
import warnings
from pathlib import Path

from .errors import GradError
from .frontend.plan import OPTIMIZERS, SETTING_HELP
from .gradcheck import DEFAULT_BATCH, DEFAULT_TOLERANCE, gradcheck
from .lowering.schedule import REWRITES
from .stages import FORMATS, STAGES, format_stats, show_stage, stage_graph, stage_stats


def _positive(text: str, low: int = 1) -> int:
    noun = "a positive integer" if low == 1 else "a whole number ≥ 0"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be {noun}, got {value}")
    return value


def _whole(text: str) -> int:
    return _positive(text, low=0)


def _settings_epilog() -> str:
    """The train settings `--set` takes, for `gradlang run --help`."""
    width = max(map(len, SETTING_HELP))
    rows = [f"  {name:<{width}}  {text}" for name, text in SETTING_HELP.items()]
    optimizers = ", ".join(f"{name}({', '.join(signature.settings)})" for name, signature in OPTIMIZERS.items())
    return "\n".join(["train settings (in the file's train block, or --set NAME=VALUE):", *rows,
                      "", "optimizers:", *textwrap.wrap(optimizers, 100, initial_indent="  ", subsequent_indent="  "),
                      "", "example: gradlang run model.grad --set optimizer='adam(lr: 0.01)' --set batch=64"])


def _settings(arguments: list | None) -> tuple:
    """`--set NAME=VALUE` arguments, parsed (frontend/syntax: parse_setting); the last of one name wins."""
    from .frontend.syntax import parse_setting
    settings = []
    for argument in arguments or ():
        name, equals, value = argument.partition("=")
        if not equals or not name.strip():
            raise GradError(f"--set takes NAME=VALUE (a train setting and gradlang text), got {argument!r}")
        settings.append(parse_setting(name.strip(), value, "--set"))
    return tuple(settings)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradlang", description="Compile and train gradlang (.grad) models.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    # the commands that compile and run a program's steps
    compiling = argparse.ArgumentParser(add_help=False)
    compiling.add_argument("--no-opt", action="append", metavar="NAME",
                           help="leave out one optimisation, to debug it or measure what it gains (repeatable): "
                                + ", ".join(REWRITES))
    compiling.add_argument("--set", action="append", metavar="NAME=VALUE", dest="settings",
                           help="replace or add a train setting; VALUE is gradlang, as in the file (repeatable): "
                                "--set optimizer='adam(lr: 0.01)' --set batch=64")

    run = sub.add_parser("run", parents=[common, compiling], help="train a model per its train block",
                         epilog=_settings_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("file", type=Path)
    run.add_argument("--json", action="store_true", help="print one JSON object with the results at the end")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--steps", type=_positive, help="number of optimizer steps (overrides the file)")
    group.add_argument("--epochs", type=_positive, help="number of passes over the data (overrides the file)")
    run.add_argument("--batch", type=_positive, help="mini-batch size (overrides the file)")
    run.add_argument("--seed", type=int, help="random seed (overrides the file)")
    run.add_argument("--out", type=Path, help="where to save the trained params (.npz)")
    run.add_argument("--float64", action="store_true", help="compute in float64 instead of float32")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--data-dir", type=Path, help="where named data sets live (default: $GRADLANG_DATA, "
                                                   "else ~/.cache/gradlang)")
    run.add_argument("--checkpoint", type=Path, help="checkpoint file, written every epoch "
                                                     "(default: the params file with .ckpt.npz)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in the checkpoint")
    run.add_argument("--eval-limit", type=_whole, metavar="N",
                     help="evaluate the final numbers on each set's first N examples only (0: no final evaluation)")
    run.add_argument("--checkpoint-every", type=float, default=1.0, metavar="SECONDS",
                     help="at least this many seconds between checkpoints, written at the end of an epoch "
                          "(default 1; 0: after every epoch)")
    run.add_argument("--plot", type=Path, metavar="PNG", help="draw the training curves into a PNG file")
    run.add_argument("--watch-grads", action="store_true",
                     help="record each param's gradient norm and update/param ratio at every update; summarise "
                          "them at the end, warn of vanishing or exploding gradients, draw them with --plot")
    run.add_argument("--log-dir", type=Path, metavar="DIR",
                     help="write every step, epoch and the final numbers to DIR/metrics.jsonl, and TensorBoard "
                          "event files where the tensorboard extra is installed")
    run.add_argument("--dry-run", action="store_true",
                     help="compile, then list the files the run would read and write, without reading data or "
                          "training (see docs/security.md)")
    run.add_argument("--check-numerics", action="store_true",
                     help="test every op's result for NaN and infinity at every step and stop at the first "
                          "(slow; without it, only a step whose loss is not finite is re-run this way)")
    run.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=None,
                     help="train data-parallel over MPI, as one rank of `mpirun -n K gradlang run …` "
                          "(default: exactly when an MPI launcher started several processes; needs the mpi "
                          "extra; see docs/distributed.md)")
    run.add_argument("--mpi-timeout", type=float, metavar="SECONDS",
                     help="how long a rank waits for the others in one collective before the job stops "
                          "(default: $GRADLANG_MPI_TIMEOUT, else 300)")

    evaluate = sub.add_parser("eval", parents=[common, compiling],
                              help="loss and metrics of trained params on a data set")
    evaluate.add_argument("file", type=Path)
    evaluate.add_argument("--params", type=Path, required=True, help="trained params (.npz from gradlang run)")
    evaluate.add_argument("--data", help="a data declaration of the program (default: the train block's "
                                         "test data, else its training data)")
    evaluate.add_argument("--data-dir", type=Path)
    evaluate.add_argument("--json", action="store_true")

    predict = sub.add_parser("predict", parents=[common, compiling], help="the program's outputs for new inputs")
    predict.add_argument("file", type=Path)
    predict.add_argument("--params", type=Path, required=True, help="trained params (.npz from gradlang run)")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help="inputs: an .npz with one array per input, or a .csv")
    source.add_argument("--data", help="a data declaration of the program")
    predict.add_argument("--data-dir", type=Path)
    predict.add_argument("--out", type=Path, help="write the outputs to this .npz instead of printing them")
    predict.add_argument("--json", action="store_true", help="print the outputs as JSON")

    ir = sub.add_parser("ir", parents=[common, compiling], help="print the IR of a model")
    ir.add_argument("file", type=Path)
    ir.add_argument("--grad", action="store_true", help="include the gradient (backward) graph")
    ir.add_argument("--no-locations", action="store_true", help="omit the source location of each node")
    ir.add_argument("--stage", choices=STAGES, default="optimized",
                    help="parsed: the AST; elaborated: the forward IR before simplification; grad: forward and "
                         "gradient IR before simplification; optimized (default): after simplification")
    ir.add_argument("--format", choices=FORMATS, default="text", help="text (default), Graphviz dot, or json")
    ir.add_argument("--stats", action="store_true",
                    help="node counts per op at each stage, and the simplification rules that fired")
    ir.add_argument("--cost", action="store_true",
                    help="FLOPs and peak activation memory of one training step, forward and backward")
    ir.add_argument("--batch", type=_positive, help="the batch size --cost assumes (default: the train block's)")
    drawing = ir.add_mutually_exclusive_group()
    drawing.add_argument("--png", type=Path, metavar="PATH", help="draw the graph into a PNG file (needs Graphviz)")
    drawing.add_argument("--svg", type=Path, metavar="PATH", help="draw the graph into an SVG file (needs Graphviz)")

    traced = sub.add_parser("trace", parents=[common, compiling],
                            help="one forward and backward pass: every node's value and d loss / d value")
    traced.add_argument("file", type=Path)
    traced.add_argument("--batch", type=_positive, default=1,
                        help="trace on the first N examples of the program's data (default 1)")
    traced.add_argument("--input", type=Path, help="trace on these inputs instead (.npz, one array per input)")
    traced.add_argument("--params", type=Path, help="trained params (.npz); default: the initial ones")
    traced.add_argument("--loss", help="the loss to differentiate (default: the trained one)")
    traced.add_argument("--training", action="store_true", help="dropout on, as in a training step")
    traced.add_argument("--format", choices=("text", "json"), default="text")
    traced.add_argument("--data-dir", type=Path)
    traced_drawing = traced.add_mutually_exclusive_group()
    traced_drawing.add_argument("--png", type=Path, metavar="PATH",
                                help="draw the graph with each node's value and gradient (needs Graphviz)")
    traced_drawing.add_argument("--svg", type=Path, metavar="PATH", help="the same drawing as SVG")

    grad = sub.add_parser("grad", parents=[common],
                          help="print the backward pass as gradlang assignments, in execution order")
    grad.add_argument("file", type=Path)

    check = sub.add_parser("gradcheck", parents=[common],
                           help="compare every param's gradient with finite differences, in float64")
    check.add_argument("file", type=Path)
    check.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help=f"largest relative error accepted (default {DEFAULT_TOLERANCE:g})")
    check.add_argument("--batch", type=_positive, default=DEFAULT_BATCH,
                       help=f"examples in the batch checked (default {DEFAULT_BATCH})")
    check.add_argument("--random", action="store_true",
                       help="check on random inputs of the declared shapes instead of the program's data")
    check.add_argument("--per-op", action="store_true",
                       help="also check each primitive's gradient rule where it is used, and name the first wrong one")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs and directions")
    check.add_argument("--data-dir", type=Path)
    check.add_argument("--json", action="store_true", help="print one JSON object")

    lint = sub.add_parser("check", parents=[common],
                          help="warnings about the program (unused inputs, params without gradient, …) and the "
                               "numerically stable rewrites that apply")
    lint.add_argument("file", type=Path)
    lint.add_argument("--json", action="store_true", help="print the findings as JSON")

    export = sub.add_parser("export", parents=[common],
                            help="write the trained inference graph (dropout off) as an ONNX model")
    export.add_argument("file", type=Path)
    export.add_argument("--params", type=Path, required=True, help="trained params (.npz from gradlang run)")
    export.add_argument("--onnx", type=Path, required=True, metavar="OUT", help="the .onnx file to write")
    export.add_argument("--output", action="append", metavar="NAME",
                        help="a value to export: an output declaration, a metric or a named value "
                             "(repeatable; default: the program's output declarations)")
    export.add_argument("--batch", type=_positive, metavar="N",
                        help="fix every symbolic dimension to this size (default: they stay symbolic)")

    sample = sub.add_parser("sample", parents=[common],
                            help="write text with a trained character-level language model (see gradlang/sample.py)")
    sample.add_argument("file", type=Path)
    sample.add_argument("--params", type=Path, required=True, help="trained params (.npz from gradlang run)")
    sample.add_argument("--prime", default="", help="the text to start from (printed first)")
    sample.add_argument("--length", type=_positive, default=300, help="characters to write after the prime")
    sample.add_argument("--temperature", type=float, default=1.0,
                        help="below 1: safer choices, above 1: wilder ones; 0 always takes the most likely")
    sample.add_argument("--seed", type=int, default=0, help="seed of the draws (the same seed, the same text)")
    sample.add_argument("--output", help="the output of next-character logits, if the program has several")
    sample.add_argument("--data-dir", type=Path)

    lsp = sub.add_parser("lsp", parents=[common], help="the language server for editors, on stdin/stdout "
                                                       "(needs the lsp extra: pip install 'gradlang[lsp]')")
    lsp.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default and only way)")
    lsp.add_argument("--debounce", type=float, default=0.3,
                     help="seconds to wait after a change before compiling (default 0.3)")

    fmt = sub.add_parser("fmt", parents=[common], help="lay out .grad files in the canonical style")
    fmt.add_argument("paths", nargs="+", metavar="FILE", help=".grad files, folders (every .grad file "
                                                           "inside) or - for standard input to output")
    fmt.add_argument("--check", action="store_true",
                     help="change nothing; list the files that would change and exit 1 if there are any")
    fmt.add_argument("--diff", action="store_true", help="change nothing; print what would change as a diff")

    data = sub.add_parser("data", help="manage data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", parents=[common], help="download a data set and verify its checksums")
    fetch.add_argument("name", help="the data set (mnist, cifar10)")
    fetch.add_argument("--url", help="base URL to download from (default: the data set's usual mirror, or "
                                     "$GRADLANG_<NAME>_URL)")
    fetch.add_argument("--data-dir", type=Path)
    return parser


def _json(value) -> str:
    """`value` as strict JSON: a NaN or infinite number (a loss that diverged) becomes null, which
    every JSON reader accepts, rather than the bare NaN that Python's json writes."""
    def strict(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strict(x) for x in v]
        return v
    return json.dumps(strict(value), allow_nan=False)


def _params_path(args, program) -> Path:
    if args.out is not None:
        return args.out
    return program.plan_output("save") or Path(args.file.stem + ".npz")


def _check_readable(path: Path) -> None:
    """Refuse a file that cannot be compiled at all, as an error of its own (not an internal one)."""
    try:
        path.read_bytes()   # (text that is not UTF-8 is reported by the parser, at its line and column)
    except FileNotFoundError:
        near = Path(str(path).strip())
        spaced = near != path and near.exists()
        raise GradError("no such file" + (f" (the name has spaces around it: did you mean {str(near)!r}?)"
                                          if spaced else "")) from None
    except IsADirectoryError:
        raise GradError("is a directory, not a .grad file") from None
    except OSError as err:
        raise GradError(f"cannot read the file: {err.strerror or err}") from None


def _compile(args, **kw):
    from . import api
    _check_readable(args.file)
    program = api.compile(args.file, no_opt=tuple(getattr(args, "no_opt", None) or ()),
                          settings=_settings(getattr(args, "settings", None)), **kw)
    program.data_dir = getattr(args, "data_dir", None)
    return program


def _count(number, noun: str) -> str:
    """`1 step`, `3 steps`, `1.5 epochs`."""
    return f"{number:g} {noun}" + ("" if number == 1 else "s")


def _print_numbers(title: str, numbers: dict) -> None:
    print(title)
    width = max(len(k) for k in numbers)
    for name, value in numbers.items():
        print(f"  {name:<{width}}  {value:.6g}")


def _warn_gradients(args, watch) -> None:
    """The gradient watch's warnings (vanishing, exploding), on stderr."""
    for warning in watch.warnings() if watch is not None else ():
        print(f"{args.file}: warning: {warning}", file=sys.stderr)


def cmd_run(args) -> int:
    """Train; under an MPI launcher (or --distributed), as one rank of a data-parallel job, which any
    rank's error stops as a whole (the others would otherwise wait for it until their timeout)."""
    from .runtime.distributed import from_environment
    if args.seed is not None and args.seed < 0:
        raise GradError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.mpi_timeout is not None and not args.mpi_timeout > 0:
        raise GradError(f"--mpi-timeout must be a positive number of seconds, got {args.mpi_timeout:g}")
    parallel = from_environment(args.distributed, args.mpi_timeout)
    if parallel is None:
        return _train(args, None)
    try:
        return _train(args, parallel)
    except GradError as err:
        parallel.abort(traceback.format_exc() if args.debug else _report(err, args.file), 1)
    except KeyboardInterrupt:
        parallel.abort("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - an internal error, reported as main() would
        parallel.abort(traceback.format_exc() if args.debug else f"internal error: {type(err).__name__}: {err}", 2)
    return 1   # not reached: abort ends the process


def _train(args, parallel) -> int:
    from .progress import TerminalReporter
    program = _compile(args, dtype="float64" if args.float64 else "float32", seed=args.seed)
    program.distributed = parallel
    root = parallel is None or parallel.is_root   # only rank 0 prints and writes files
    if not args.quiet and root:
        _warn(program)
    target = _params_path(args, program)
    checkpoint = args.checkpoint or program.plan_output("checkpoint") or target.with_suffix(".ckpt.npz")
    if args.dry_run:
        return _dry_run(args, program, target, checkpoint)
    program.check_numerics = args.check_numerics
    if root:
        _check_writable(target, program, args)   # before training, not after an hour of it
    reporter = None if args.quiet or args.json or not root else TerminalReporter()
    if reporter is not None and program.plan.get("phases"):   # and each phase's loss now and then
        from .runtime.phases import PhaseReporter
        reporter = PhaseReporter(reporter, program)
    result = program.train(epochs=args.epochs, steps=args.steps, batch_size=args.batch, reporter=reporter,
                           checkpoint=checkpoint, resume=args.resume, checkpoint_interval=args.checkpoint_every,
                           eval_limit=args.eval_limit, log_dir=args.log_dir, watch_grads=args.watch_grads)
    if not root:
        return 0
    try:
        path = program.save(target)
    except OSError as err:
        raise _cannot_write_params(target, program, args, err) from None
    plot = None
    if args.plot is not None:
        from .plot import plot_curves
        plot = plot_curves(result, args.plot, args.file.name,
                           None if program.phases else program.runner.learning_rate, result.gradient_watch)
    watch = result.gradient_watch
    if args.json:
        extra = {"gradients": watch.totals()} if watch is not None else {}
        print(_json({**result.as_dict(), **extra, "params_file": str(path), "checkpoint": str(checkpoint),
                          **({"plot": str(plot)} if plot else {}), **({"ranks": parallel.size} if parallel else {})}))
        _warn_gradients(args, watch)
        return 0
    print(f"trained {_count(result.steps, 'step')} ({_count(result.epochs, 'epoch')}) in {result.seconds:.2f} s"
          + (f" on {parallel.size} ranks" if parallel else "")
          + (f", learning rate now {result.learning_rate:.3g}" if result.learning_rate is not None else "")
          + (" — stopped early, best params restored" if result.stopped_early else ""))
    if result.evaluated == 0:
        _print_numbers("training set (the last epoch's mean loss; no final evaluation)", {"loss": result.loss})
    else:
        first = f" (first {result.evaluated:,} examples)" if result.evaluated else ""
        _print_numbers(f"training set{first}", {"loss": result.loss, **result.metrics})
        if result.validation:
            _print_numbers(f"validation set{first}", result.validation)
        if result.test:
            _print_numbers(f"test set{first}", result.test)
    if reporter is not None and reporter.curves():
        print(reporter.curves())
    if watch is not None:
        print(watch.summary())
        sys.stdout.flush()
        _warn_gradients(args, watch)
    print(f"params saved to {path}" + (f", curves drawn in {plot}" if plot else ""))
    if args.log_dir is not None:
        from .runtime.metrics_log import JSON_LINES, TENSORBOARD_EXTRA, tensorboard_available
        print(f"metrics logged to {args.log_dir / JSON_LINES}"
              + (f" and TensorBoard event files (tensorboard --logdir {args.log_dir})" if tensorboard_available()
                 else f" (TensorBoard event files too with the tensorboard extra: {TENSORBOARD_EXTRA})"))
    if result.skipped:
        print(f"{args.file}: warning: skipped {len(result.skipped)} step(s) whose loss was not finite "
              f"(on_nonfinite = \"skip\"); the first:\n{result.skipped[0]}", file=sys.stderr)
    nonfinite = [r["epoch"] for r in result.epoch_log if not math.isfinite(r.get("val_loss", 0.0))]
    if nonfinite:
        print(f"{args.file}: warning: the loss on the validation set was not finite after {len(nonfinite)} "
              f"epoch(s), the first after epoch {nonfinite[0]} (on_nonfinite = \"skip\"; such epochs never "
              "count as an improvement for early stopping)", file=sys.stderr)
    return 0


def _dry_run(args, program, target: Path, checkpoint: Path) -> int:
    """What `run` would read and write, found without reading the data or writing anything."""
    from .runtime.data import paths
    plan = program.plan
    reads = []
    used = {k: plan[k] for k in ("data", "validation", "test") if k in plan}
    declared = list(program.elaborated.data.items())
    declared += [(f"<train {k}>", v) for k, v in used.items()   # a source written in the train block itself
                 if hasattr(v, "source") and all(v is not d for d in program.elaborated.data.values())]
    for name, spec in declared:
        roles = [k for k, v in used.items() if v is spec]
        files = [str(p.resolve()) for p in paths(spec, program.folder, program.data_dir)]
        reads.append({"data": name, "source": spec.source, "files": files, "used_as": roles})
    writes = {"params": str(target.resolve()), "checkpoint": str(Path(checkpoint).resolve())}
    why = {"params": _why_there(args.out, "--out", program, "save",
                                "the default: the file's name, in the current folder"),
           "checkpoint": _why_there(args.checkpoint, "--checkpoint", program, "checkpoint",
                                    "the default: beside the params")}
    if args.plot is not None:
        writes["plot"], why["plot"] = str(args.plot.resolve()), "--plot on the command line"
    if args.json:
        print(_json({"file": str(args.file), "reads": reads, "writes": writes, "write_reasons": why,
                          "params": {n: list(v.shape) for n, v in program.params.items()}}))
        return 0
    n_values = sum(v.size for v in program.params.values())
    print(f"{args.file} compiles: {len(program.params)} params ({n_values:,} values); nothing was read or trained")
    print("would read:" if reads else "would read: nothing")
    for r in reads:
        files = ", ".join(r["files"]) or "no file (generated)"
        used_as = " as " + "/".join(r["used_as"]) if r["used_as"] else ""
        print(f"  data {r['data']} = {r['source']}(…){used_as}: {files}")
    print("would write:")
    for what, path in writes.items():
        print(f"  {what:<10} {path}  ({why[what]})")
    return 0


def _why_there(given, option: str, program, setting: str, default: str) -> str:
    """Why a file goes where `--dry-run` says: the command line (yours to choose), the program's setting
    (checked to stay below its folder, links followed), or the default."""
    if given is not None:
        return f"{option} on the command line"
    if setting in program.plan:
        span = _setting_span(program, setting)
        where = f" at line {span.line}" if span is not None else ""
        return f"{setting} = {program.plan[setting]!r}{where}: inside the program's folder, links followed"
    return default


def _setting_span(program, setting: str):
    """Where the program's train block sets `setting`; None where it does not (or there is none)."""
    plan = program.elaborated.plan
    return None if plan is None else plan.spans.get(setting)


def _cannot_write_params(target: Path, program, args, err: OSError) -> GradError:
    """The error for params that cannot be written to `target`, pointing at the program's `save`
    setting unless --out chose the place."""
    span = None if args.out is not None else _setting_span(program, "save")
    return GradError(f"cannot write the params to {target}: {err.strerror or err}", span)


def _check_writable(target: Path, program, args) -> None:
    import os
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        raise _cannot_write_params(target, program, args, err) from None


def _load_params(program, path: Path) -> None:
    from .runtime.formats import read_npz
    values = read_npz(path)   # (a damaged or pickled file is named with its field)
    try:
        program.load_arrays(values, str(path))
    except KeyError as err:
        raise GradError(f"cannot load params from {path}: {err.args[0]}") from None
    except (ValueError, GradError) as err:
        raise GradError(f"cannot load params from {path}: {getattr(err, 'message', err)}") from None


def cmd_eval(args) -> int:
    program = _compile(args)
    _load_params(program, args.params)
    if args.data is not None:
        arrays = program.load_data(_data_name(program, args.data))
    else:
        arrays = program.load_data(setting="test" if "test" in program.plan else "data")
    numbers = program.evaluate(arrays)
    if args.json:
        print(_json(numbers))
    else:
        _print_numbers(f"{args.data or ('test set' if 'test' in program.plan else 'training set')}", numbers)
    return 0


def _data_name(program, name: str) -> str:
    if name not in program.elaborated.data:
        known = ", ".join(program.elaborated.data) or "none"
        raise GradError(f"the program has no data declaration {name!r} (it has: {known})")
    return name


def _read_inputs(program, path: Path) -> dict:
    """Inputs to predict from: an .npz (one array per input), or a CSV read with the columns of the
    train block's csv(…) data — its features as `x`; its target, where the file has it, left out — and
    scaled with the training statistics where that data is standardized. Without a csv training set,
    every column of the CSV is a feature."""
    if path.suffix != ".csv":
        from .runtime.formats import read_npz
        return read_npz(path)
    from .runtime.data import standardizes
    from .runtime.formats import read_csv
    spec = program.plan.get("data")
    if getattr(spec, "source", None) != "csv":
        return read_csv(path, target=None)
    from .frontend.sources import DATA_SOURCES
    settings = {**DATA_SOURCES["csv"].defaults, **dict(spec.kwargs)}   # the source's defaults, then the program's
    x = program.elaborated.inputs.get("x")
    width = x.shape[-1] if x is not None and len(x.shape) == 2 and isinstance(x.shape[-1], int) else None
    arrays = read_csv(path, settings["target"], settings["header"], settings["delimiter"], settings["features"],
                      target_optional=True, feature_count=width)
    arrays.pop("y", None)
    if standardizes(spec):
        if program.standardization is None:
            raise GradError("the program standardizes its csv data, but the params file holds no "
                            "standardization statistics (train with this version of gradlang, which saves them)")
        arrays = program.standardization.apply(arrays, str(path))
    return arrays


def cmd_predict(args) -> int:
    import numpy as np
    program = _compile(args)
    _load_params(program, args.params)
    if args.data:
        feed = program.load_data(_data_name(program, args.data))
    else:   # checked as a data set is: a field per input, one entry per example, no NaN, labels in range
        from .runtime.data import check_fields
        feed = _read_inputs(program, args.input)
        check_fields(feed, program.elaborated.inputs, program.model_graph, str(args.input))
    feed = {k: v for k, v in feed.items() if k in program.input_names}
    outputs = program.predict(feed)
    if args.out is not None:
        from .runtime.train import save_params
        save_params(outputs, args.out)
        print(f"outputs {', '.join(outputs)} written to {args.out}")
    elif args.json:
        print(_json({k: np.asarray(v).tolist() for k, v in outputs.items()}))
    else:
        with np.printoptions(threshold=200, edgeitems=5, precision=5, suppress=True):
            for name, value in outputs.items():
                print(f"{name} {np.asarray(value).dtype}{list(np.shape(value))}:\n{np.asarray(value)}")
    return 0


def cmd_export(args) -> int:
    from .export.onnx import describe_signature, save_model, to_onnx
    program = _compile(args)
    _load_params(program, args.params)
    model = to_onnx(program, args.output, args.batch)
    save_model(model, args.onnx)
    print(f"ONNX model (opset {model.opset_import[0].version}) written to {args.onnx}")
    print(describe_signature(model))
    return 0


def cmd_sample(args) -> int:
    from .sample import sample_text
    program = _compile(args)
    _load_params(program, args.params)
    print(sample_text(program, args.length, args.prime, args.temperature, args.seed, args.output))
    return 0


def cmd_lsp(args) -> int:
    from .lsp import run
    return run(["--debounce", str(args.debounce)])


def cmd_fmt(args) -> int:
    import difflib

    from .frontend.syntax.format import format_source
    if args.paths == ["-"]:
        text = sys.stdin.read()
        result = format_source(text, "<stdin>")
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), result.splitlines(True),
                                                       "<stdin>", "<stdin> (formatted)"))
        elif not args.check:
            sys.stdout.write(result)
        return 1 if args.check and result != text else 0
    files = []
    for path in map(Path, args.paths):
        files += sorted(path.rglob("*.grad")) if path.is_dir() else [path]
    changed, failed = [], False
    for path in files:
        try:
            _check_readable(path)
            text = path.read_text(encoding="utf-8")
            result = format_source(text, str(path))
        except GradError as err:
            print(_report(err, path), file=sys.stderr)
            failed = True
            continue
        if result == text:
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), result.splitlines(True),
                                                       str(path), f"{path} (formatted)"))
        if args.check:
            print(f"would reformat {path}")
        elif not args.diff:
            path.write_text(result, encoding="utf-8")
            print(f"reformatted {path}")
    return 1 if failed or (args.check and changed) else 0


def cmd_data(args) -> int:
    from .runtime.fetch import data_dir, fetch
    root = data_dir(args.data_dir)
    fetch(args.name, root, url=args.url, log=lambda line: print(line, file=sys.stderr))
    print(f"{args.name} is in {root / args.name}")
    return 0


def cmd_ir(args) -> int:
    program = _compile(args)
    if args.stage == "elaborated" and args.grad:
        raise GradError("--grad applies to the optimized stage; the gradient before simplification is --stage grad")
    if args.stats:
        stats = stage_stats(program, args.batch)
        sys.stdout.write(_json(stats) + "\n" if args.format == "json" else format_stats(stats))
    elif args.cost:
        from .lowering.cost import format_cost, training_step_cost
        cost = training_step_cost(program, args.batch or program.plan.get("batch"))
        sys.stdout.write(_json(cost.as_dict()) + "\n" if args.format == "json" else format_cost(cost))
    elif args.png or args.svg:
        from .ir.dot import graph_to_dot, render
        if args.stage == "parsed":
            raise GradError("--png and --svg draw a graph; the parsed stage is an AST (try --format dot)")
        graph = stage_graph(program, args.stage, args.grad)
        path = render(graph_to_dot(graph, title=f"{args.file} — {args.stage}"), args.png or args.svg)
        print(f"drawn in {path}")
    else:
        sys.stdout.write(show_stage(program, args.file, args.stage, args.grad, args.format,
                                    locations=not args.no_locations, batch=args.batch))
    return 0


def cmd_trace(args) -> int:
    program = _compile(args)
    if args.params is not None:
        _load_params(program, args.params)
    if args.input is not None:
        from .runtime.formats import read_npz
        feed = {k: v for k, v in read_npz(args.input).items() if k in program.input_names}
    elif program.input_names:
        if "data" not in program.plan:
            raise GradError("the program names no training data to trace on; give --input x.npz (one array per "
                            "input)")
        feed = {k: v[:args.batch] for k, v in program.load_data().items() if k in program.input_names}
    else:
        feed = {}
    result = program.trace(feed, loss=args.loss, training=args.training)
    if args.png or args.svg:
        print(f"drawn in {result.save(args.png or args.svg)}")
    elif args.format == "json":
        print(result.json())
    else:
        print(result)
    return 0


def cmd_grad(args) -> int:
    program = _compile(args)
    _warn(program)
    sys.stdout.write(program.backward_listing())
    return 0


def cmd_gradcheck(args) -> int:
    _check_readable(args.file)
    report = gradcheck(args.file, batch=args.batch, tolerance=args.tolerance, per_op=args.per_op,
                       use_data=not args.random, seed=args.seed, data_dir=args.data_dir)
    sys.stdout.write(_json(report.as_dict()) + "\n" if args.json else report.format())
    return 0 if report.ok else 1


def cmd_check(args) -> int:
    from .analysis.lint import lint
    from .passes.stability import stabilize
    program = _compile(args)
    warnings_found = lint(program)
    _, rewrites = stabilize(program.elaborated.graph)
    if args.json:
        print(_json({"warnings": [w.as_dict() for w in warnings_found],
                          "stability_rewrites": [r.as_dict() for r in rewrites]}))
        return 0
    for w in warnings_found:
        print(w.format(), file=sys.stderr)
    for r in rewrites:
        print(r.format())
    if not warnings_found and not rewrites:
        print(f"{args.file}: no warnings")
    return 0


def _warn(program) -> None:
    """Print the compiler's warnings about the program (see analysis/lint.py) on stderr."""
    from .analysis.lint import lint
    for w in lint(program):
        print(w.format(), file=sys.stderr)


# The elaborator inlines every call recursively (up to its own limit of 200 nested calls, about a dozen
# Python frames each, more with deep expressions); Python's default limit of 1000 frames would cut it
# short with a RecursionError. 10,000 frames leave it room and stay well inside the C stack.
RECURSION_LIMIT = 10_000


def _report(err: GradError, file: Path | None) -> str:
    """The error as the compiler prints it; one without a place in the source is still named by the file."""
    text = err.format()
    return text if err.span is not None or file is None else f"{file}: {text}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    file = getattr(args, "file", None)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
    try:
        with warnings.catch_warnings():
            if not args.debug:   # a NumPy warning (an overflow) names the program, not gradlang's source
                warnings.showwarning = lambda message, category, *_: print(
                    f"{file or 'gradlang'}: warning: {message}", file=sys.stderr)
            return {"run": cmd_run, "ir": cmd_ir, "eval": cmd_eval, "predict": cmd_predict, "data": cmd_data,
                    "grad": cmd_grad, "trace": cmd_trace, "gradcheck": cmd_gradcheck, "check": cmd_check,
                    "export": cmd_export, "sample": cmd_sample, "lsp": cmd_lsp,
                    "fmt": cmd_fmt}[args.command](args)
    except GradError as err:
        if args.debug:
            raise
        print(_report(err, file), file=sys.stderr)
        return 1
    except RecursionError:
        if args.debug:
            raise
        print(f"{file}: error: the program nests calls or expressions too deeply to compile "
              "(is a function recursive without end?)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (`gradlang trace … | head`): stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")   # noqa: SIM115 - so that the interpreter's final flush is silent
        return 141
    except Exception as err:  # an internal error: a bug in gradlang, not in the program
        if args.debug:
            raise
        print(f"internal error: {type(err).__name__}: {err}\n(run with --debug for the traceback, and please "
              "report it)", file=sys.stderr)
        return 2
    finally:
        sys.setrecursionlimit(limit)


if __name__ == "__main__":
    sys.exit(main())
