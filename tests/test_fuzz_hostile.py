"""Fuzzing with hostile programs, data files, params files and checkpoints (docs/security.md): whatever
a `.grad` file calls with whatever arguments, and however its data or checkpoint is damaged,
`gradlang` trains, or stops with a located `GradError` — never an internal error, a hang, or memory
it was not allowed.

The cases come from tests/hostile_cases.py: every builtin, data source, optimizer, initialiser and
standard-library function and layer, found in gradlang's own tables and parsed from stdlib/, called
with hostile arguments in a one-step training program; damaged CSV, IDX, NPZ, MNIST, params and
checkpoint files. Each case runs in a reused worker process with GRADLANG_MAX_BYTES = 1 GB, 3 GB of
address space and 20 s; one that dies, hangs or runs out of memory is recorded and its worker
replaced, so one case cannot take the suite down.

The default run checks a slice of the cases (seed 0) in about 20 s; `pytest -m fuzz
tests/test_fuzz_hostile.py` runs GRADLANG_FUZZ_HOSTILE cases (10,000 by default, about 7 minutes on
2 cores) from the seed GRADLANG_FUZZ_HOSTILE_SEED (random by default, and printed). On failure the report lists each
distinct failure — the exception and where in gradlang it was raised — once, with its count, its
smallest case and the command that reruns it: `python tests/hostile_cases.py --seed S --case I`.
GRADLANG_FUZZ_HOSTILE_REPORT names a file for the results as JSON; GRADLANG_FUZZ_PROGRESS a file
to append progress to.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hostile_cases import FAMILIES, callee_table, make_case, run_cases, selftest_case

QUICK_CASES = 250          # every family at least twice (the family cycle is 100 long)
LONG_RUN = int(os.environ.get("GRADLANG_FUZZ_HOSTILE", "10000"))


def check(cases, seed: int) -> None:
    """Run the cases; fail with one entry per distinct failure (the report is long otherwise)."""
    results = run_cases(cases, progress=os.environ.get("GRADLANG_FUZZ_PROGRESS"), seed=seed)
    if os.environ.get("GRADLANG_FUZZ_HOSTILE_REPORT"):
        Path(os.environ["GRADLANG_FUZZ_HOSTILE_REPORT"]).write_text(json.dumps(results.as_json(), indent=1))
    print(results.summary())
    if results.failures:
        pytest.fail(results.report(), pytrace=False)


def test_a_slice_of_hostile_cases_trains_or_fails_with_a_located_error():
    check((make_case(0, i) for i in range(QUICK_CASES)), seed=0)


@pytest.mark.fuzz
def test_long_run_of_hostile_cases():
    seed = int(os.environ.get("GRADLANG_FUZZ_HOSTILE_SEED", random.randrange(10 ** 6)))
    print(f"GRADLANG_FUZZ_HOSTILE_SEED={seed}")
    check((make_case(seed, i) for i in range(LONG_RUN)), seed=seed)


def test_the_harness_records_each_kind_of_failure_and_goes_on():
    """A case that hangs (in Python or in C), runs out of memory, aborts or exits is recorded as such,
    and the worker that ran it is replaced: the next case runs."""
    actions = ["hang", "hang in C", "memory", "crash", "exit"]
    cases = [case for action in actions for case in (selftest_case(action), selftest_case("nothing"))]
    results = run_cases(cases, workers=1, grace=1.0)
    outcomes = {case["title"]: result["outcome"] for found in results.failures.values() for case, result in found}
    assert outcomes == {"hang": "hang", "hang in C": "hang", "memory": "memory", "crash": "internal",
                        "exit": "internal"}, results.report()
    assert results.counts["ok"] == len(actions), results.summary()


def test_the_real_runs_behind_damaged_files_train():
    """Checkpoint and params cases damage the files of a real run: undamaged, each case trains (else
    these families would only test the setup's error)."""
    cases = []
    for index in range(300):
        case = make_case(0, index)
        if case["family"] in ("checkpoint", "params"):
            case["steps"] = [step for step in case["steps"] if "damage" not in step]
            cases.append(case)
    results = run_cases(cases[:6])
    assert results.counts == {"ok": 6}, results.report()


def test_the_generators_reach_every_callable_and_family():
    """Over a long run's first cases, every family runs and every callable in gradlang's tables
    (builtins, data sources, optimizers, initialisers, stdlib functions and layers) is called."""
    cases = [make_case(1, i) for i in range(3000)]
    assert {case["family"] for case in cases} == set(FAMILIES)
    called = {case.get("callee") for case in cases}
    missing = [c.reference for kind, found in callee_table().items() if kind != "primitive" for c in found
               if c.reference not in called]
    assert not missing, missing
