"""The `gradlang` command.

    gradlang run FILE [--json] [--steps N | --epochs N] [--batch N] [--seed N] [--out PATH] [--quiet]
    gradlang ir FILE [--grad] [--no-locations]

Errors in the program print as `file:line:col: error: …` with the line and a caret, and exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import GradError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradlang", description="Compile and train gradlang (.grad) models.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="train a model per its train block")
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

    ir = sub.add_parser("ir", parents=[common], help="print the IR of a model")
    ir.add_argument("file", type=Path)
    ir.add_argument("--grad", action="store_true", help="include the gradient (backward) graph")
    ir.add_argument("--no-locations", action="store_true", help="omit the source location of each node")
    return parser


def _progress(step: int, total: int, loss: float, seconds: float) -> None:
    rate = step / seconds if seconds > 0 else float("inf")
    eta = (total - step) / rate if rate > 0 else 0.0
    print(f"step {step:>{len(str(total))}}/{total}  loss {loss:.6g}  {rate:,.0f} steps/s  eta {eta:.1f}s",
          file=sys.stderr, flush=True)


def _params_path(args, program) -> Path:
    if args.out is not None:
        return args.out
    save = program.plan.get("save")
    if save is not None:
        if not isinstance(save, str):
            raise GradError("save must be a file name in quotes", program.elaborated.plan.spans["save"])
        return program.folder / save
    return Path(args.file.stem + ".npz")


def _check_readable(path: Path) -> None:
    """Refuse a file that cannot be compiled at all, as an error of its own (not an internal one)."""
    try:
        path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GradError("no such file") from None
    except IsADirectoryError:
        raise GradError("is a directory, not a .grad file") from None
    except UnicodeDecodeError as err:
        raise GradError(f"not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise GradError(f"cannot read the file: {err.strerror or err}") from None


def cmd_run(args) -> int:
    from . import api
    _check_readable(args.file)
    program = api.compile(args.file, dtype="float64" if args.float64 else "float32", seed=args.seed)
    result = program.train(epochs=args.epochs, steps=args.steps, batch_size=args.batch,
                           log=None if args.quiet or args.json else _progress)
    target = _params_path(args, program)
    try:
        path = program.save(target)
    except OSError as err:
        span = None if args.out is not None or program.elaborated.plan is None \
            else program.elaborated.plan.spans.get("save")
        raise GradError(f"cannot write the params to {target}: {err.strerror or err}", span) from None
    if args.json:
        print(json.dumps({**result.as_dict(), "params_file": str(path)}))
    else:
        print(f"trained {result.steps} steps ({result.epochs:g} epochs) in {result.seconds:.2f} s")
        width = max([4] + [len(m) for m in result.metrics])
        print(f"{'loss':<{width}}  {result.loss:.6g}")
        for name, value in result.metrics.items():
            print(f"{name:<{width}}  {value:.6g}")
        print(f"params saved to {path}")
    return 0


def cmd_ir(args) -> int:
    from . import api
    from .ir.printer import format_graph
    _check_readable(args.file)
    program = api.compile(args.file)
    graph = program.gradient_graph() if args.grad else program.forward_graph
    sys.stdout.write(format_graph(graph, locations=not args.no_locations))
    return 0


# The elaborator inlines every call recursively (up to its own limit of 200 nested calls, about a dozen
# Python frames each, more with deep expressions); Python's default limit of 1000 frames would cut it
# short with a RecursionError. 10,000 frames leave it room and stay well inside the C stack.
RECURSION_LIMIT = 10_000


def _report(err: GradError, file: Path) -> str:
    """The error as the compiler prints it; one without a place in the source is still named by the file."""
    text = err.format()
    return text if err.span is not None else f"{file}: {text}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, RECURSION_LIMIT))
    try:
        with warnings.catch_warnings():
            if not args.debug:   # a NumPy warning (an overflow) names the program, not gradlang's source
                warnings.showwarning = lambda message, category, *_: print(
                    f"{args.file}: warning: {message}", file=sys.stderr)
            return {"run": cmd_run, "ir": cmd_ir}[args.command](args)
    except GradError as err:
        if args.debug:
            raise
        print(_report(err, args.file), file=sys.stderr)
        return 1
    except RecursionError:
        if args.debug:
            raise
        print(f"{args.file}: error: the program nests calls or expressions too deeply to compile "
              "(is a function recursive without end?)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
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
