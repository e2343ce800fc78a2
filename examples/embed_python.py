"""Embed gradlang in a Python program: compile a model from source text, drive training from your own
loop with `prog.step(feed)`, read gradients with `prog.gradients(feed)` and look at the gradient IR.

    python examples/embed_python.py

The model is a linear regression y = x·w + b on data made here with NumPy. The Python loop shuffles
the data and feeds mini-batches; each `prog.step` applies the optimizer of the train block, whose
learning rate decays with `step`. At the end the fitted coefficients are checked against least
squares, and the full-data gradient against zero.
"""
import numpy as np

import gradlang

SOURCE = """
input x : f32[B, 3]
input y : f32[B]

param w : [3]
param b : []

pred = x @ w + b
loss = mean((pred - y) ** 2)
metric mae = mean(abs(pred - y))

train {
  optimizer = sgd(lr: 0.1 / (1 + step / 50), momentum: 0.5)   # used by prog.step
}
"""


def make_data(n: int, rng: np.random.Generator):
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.25 + rng.normal(0.0, 0.01, size=n)
    return x, y


def main() -> None:
    rng = np.random.default_rng(0)
    x, y = make_data(1000, rng)
    everything = {"x": x, "y": y}

    prog = gradlang.compile(SOURCE, dtype="float64")   # source text: compiled relative to the cwd
    print(prog)
    print("initial loss", prog.loss(everything))

    batch = 64          # 1000 = 15·64 + 40: two feed shapes, so two executables are compiled, once each
    for epoch in range(6):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            prog.step({"x": x[idx], "y": y[idx]})       # one optimizer update; returns the loss before it
        print(f"epoch {epoch}  steps {prog.steps_taken}  loss {prog.loss(everything):.6f}  "
              f"mae {prog.metrics(everything)['mae']:.5f}")

    grads = prog.gradients(everything)                   # d loss / d param, by param name
    print("gradient at the end:", {k: np.round(v, 6).tolist() for k, v in grads.items()})

    print("\nThe forward and gradient IR:")
    print(prog.gradient_ir)

    # least squares on [x, 1] is the exact minimiser of this loss
    exact = np.linalg.lstsq(np.column_stack([x, np.ones(len(x))]), y, rcond=None)[0]
    fitted = np.append(prog.params["w"], prog.params["b"])
    print("fitted       ", np.round(fitted, 4))
    print("least squares", np.round(exact, 4))
    assert np.allclose(fitted, exact, atol=5e-3), (fitted, exact)
    assert max(float(np.max(np.abs(g))) for g in grads.values()) < 1e-2, grads
    print("ok")


if __name__ == "__main__":
    main()
