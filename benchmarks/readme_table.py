"""The README's performance table from runs of the benchmarks: one BLAS thread, default threads and,
optionally, default threads with another process busy on one core:

    OPENBLAS_NUM_THREADS=1 python -m benchmarks --json one.json
    python -m benchmarks --json default.json
    python -m benchmarks --contended --only mlp cnn lstm attention --json contended.json
    python -m benchmarks.readme_table one.json default.json [contended.json]
"""
from __future__ import annotations

import json
import sys

CASES = {"mlp": "MLP 784-128-64-10, batch 128", "linreg": "linear regression, 1,000 points",
         "cnn": "MNIST CNN, batch 64", "lstm": "LSTM, T 50, batch 32, hidden 128",
         "attention": "transformer block, batch 32, T 32, d 64"}
LABELS = {"pytorch": "PyTorch", "jax": "JAX"}


def _time(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def table(one: dict, default: dict, contended: dict | None = None) -> str:
    runs = [one, default] + ([contended] if contended else [])
    rows = ["| training step (times: 1 thread) | gradlang | NumPy by hand | PyTorch eager | JAX jit "
            "| gradlang / best peer, 1 thread | default threads |" + (" contended |" if contended else ""),
            "| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if contended else "")]
    for case, label in CASES.items():
        a = one[case]
        cells = [_time(a[side]["median_s"]) if side in a else "—" for side in ("gradlang", "numpy", "pytorch", "jax")]
        ratios = [f"{r[case]['ratio_best_peer']:.2f}× ({LABELS[r[case]['best_peer']]})"
                  if "best_peer" in r.get(case, {}) else "—" for r in runs]
        rows.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    rows += ["", "| also measured (1 thread) | gradlang | | |", "| --- | --- | --- | --- |"]
    for name, run in one["compile"].items():
        depth = name.replace(" layers", "-layer")
        rows.append(f"| compile (parse → schedule) a {depth} MLP | {run['seconds'] * 1e3:,.0f} ms "
                    f"| {run['nodes']:,} IR nodes | {run['us_per_node']:.0f} µs per node |")
    memory = one.get("memory", {})
    if "ratio_net" in memory:
        rows.append(f"| peak memory, MNIST MLP training ({memory['steps']} steps) | {memory['ratio_net']:.2f}× "
                    f"the arrays it needs (net of imports) | {memory['ratio_raw']:.2f}× raw | target ≤ 1.5× net |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    loaded = []
    for path in sys.argv[1:4]:
        with open(path) as file:
            loaded.append(json.load(file))
    sys.stdout.write(table(*loaded))
