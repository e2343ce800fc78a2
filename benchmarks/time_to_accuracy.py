"""Time to accuracy: examples/mnist_cnn.grad trained by gradlang and the same model, initial params,
batch, optimizer and learning-rate schedule in PyTorch eager, each until the test accuracy reaches
99.0% (checked after every epoch, up to the program's 4 epochs); the training wall time of each,
evaluation excluded. Not a test: it takes minutes, and needs MNIST and PyTorch.

    python -m benchmarks --time-to-accuracy      # GRADLANG_DATA (or --data-dir) holds mnist/
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

import gradlang

from . import references_torch

PROGRAM = Path(__file__).resolve().parent.parent / "examples" / "mnist_cnn.grad"
TARGET = 0.99
BATCH, EPOCHS, TOTAL_STEPS, LR, LR_MIN = 128, 4, 1876, 0.002, 0.0001   # as the program's train block


def cosine_decay(step: int) -> float:
    """The program's schedule, cosine_decay(step, 1876, 0.002, 0.0001) (stdlib/schedules.grad)."""
    return LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * min(step / TOTAL_STEPS, 1.0)))


def run_gradlang(data_dir: Path | None) -> dict:
    prog = gradlang.compile(PROGRAM)
    prog.data_dir = data_dir
    train, test = prog.load_data("train_set"), prog.load_data("test_set")
    initial = {name: value.copy() for name, value in prog.params.items()}
    rng = np.random.default_rng(0)   # the same batches, in the same order, as the PyTorch run
    epochs, seconds = [], 0.0
    for _ in range(EPOCHS):
        start = time.perf_counter()
        order = rng.permutation(len(train["x"]))
        for first in range(0, len(order), BATCH):
            picked = order[first:first + BATCH]
            prog.step({"x": train["x"][picked], "y": train["y"][picked]})
        seconds += time.perf_counter() - start
        accuracy = float(prog.evaluate(test)["accuracy"])
        epochs.append({"seconds": seconds, "test_accuracy": accuracy})
        if accuracy >= TARGET:
            break
    return {"epochs": epochs, "initial": initial, "train": train, "test": test}


def torch_model(initial: dict):
    """The program's network in PyTorch: its params (from gradlang's, by name and layout) and logits."""
    import torch
    import torch.nn.functional as F
    params = {name: torch.tensor(value, requires_grad=True) for name, value in initial.items()}

    def logits(x):
        h = F.max_pool2d(F.relu(F.conv2d(x, params["conv1.W"], params["conv1.b"], padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv2.W"], params["conv2.b"], padding=2)), 2)
        h = F.relu(h.flatten(1) @ params["hidden.W"] + params["hidden.b"])
        return h @ params["out.W"] + params["out.b"]
    return params, logits


def run_pytorch(initial: dict, train: dict, test: dict) -> dict:
    import torch
    import torch.nn.functional as F
    params, logits = torch_model(initial)
    optimizer = torch.optim.Adam(list(params.values()), lr=LR)
    x, y = torch.from_numpy(train["x"]), torch.from_numpy(train["y"])
    test_x, test_y = torch.from_numpy(test["x"]), torch.from_numpy(test["y"])
    rng = np.random.default_rng(0)
    epochs, seconds, step = [], 0.0, 0
    for _ in range(EPOCHS):
        start = time.perf_counter()
        order = torch.from_numpy(rng.permutation(len(x)))
        for first in range(0, len(x), BATCH):
            picked = order[first:first + BATCH]
            for group in optimizer.param_groups:
                group["lr"] = cosine_decay(step)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(logits(x[picked]), y[picked]).backward()
            optimizer.step()
            step += 1
        seconds += time.perf_counter() - start
        with torch.no_grad():
            correct = sum(int((logits(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum())
                          for i in range(0, len(test_x), 1000))
        epochs.append({"seconds": seconds, "test_accuracy": correct / len(test_x)})
        if epochs[-1]["test_accuracy"] >= TARGET:
            break
    return {"epochs": epochs, "threads": torch.get_num_threads()}


def time_to_accuracy(data_dir: Path | None = None) -> dict:
    """Both runs, from the same initial params and on the same batches in the same order; each entry
    lists, per epoch, the training seconds so far and the test accuracy."""
    mine = run_gradlang(data_dir)
    out = {"target": TARGET, "gradlang": mine["epochs"]}
    if references_torch.available():
        torch_run = run_pytorch(mine["initial"], mine["train"], mine["test"])
        out["pytorch"], out["pytorch_threads"] = torch_run["epochs"], torch_run["threads"]
    return out


def report(result: dict) -> str:
    lines = [f"time to {result['target']:.1%} test accuracy, examples/mnist_cnn.grad (training time, "
             "evaluation excluded)"]
    for system in ("gradlang", "pytorch"):
        if system not in result:
            lines.append(f"  {system}: not installed (pip install -e '.[bench]')")
            continue
        epochs = result[system]
        reached = epochs[-1]["test_accuracy"] >= result["target"]
        per_epoch = ", ".join(f"{e['test_accuracy']:.2%} at {e['seconds']:.0f} s" for e in epochs)
        lines.append(f"  {system}: {'reached' if reached else 'did not reach'} it in {len(epochs)} epoch(s), "
                     f"{epochs[-1]['seconds']:.0f} s ({per_epoch})")
    return "\n".join(lines) + "\n"
