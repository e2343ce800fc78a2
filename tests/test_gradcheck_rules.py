"""gradcheck catches a wrong gradient rule, for every primitive that has one: each rule in turn, with
one operand's cotangent scaled by 1.01 (or dropped: scaled by 0), is flagged by the per-op check
(`check_ops`, naming the op and operand) and by the whole-program check (`check_params`). A 1% error
is a hundred times the tolerance, so this holds the checker to its job however it treats kinks and
rounding.

Each op has a small program whose loss's gradient goes through that op's rule, for each operand
listed. The ops only gradients emit (conv2d_filter_grad, max_pool2d_select, …) are reached with a
`grad(...)` in the program, whose result the loss uses: the training gradient then differentiates
them. Programs are compiled before a rule is broken, so such a `grad` keeps the right rule inside the
loss (finite differences would agree with a wrong one there) and only the gradient checked uses it."""
import dataclasses

import numpy as np
import pytest

import gradlang
from gradlang.gradcheck import DEFAULT_TOLERANCE, check_op, check_ops, check_params, random_feed
from gradlang.ir.graph import Emit, Graph
from gradlang.ops import registry

# op → (a program whose loss's gradient goes through the op's rule, the operands whose cotangents it uses)
RULE_PROGRAMS = {
    "add": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
            "loss = sum(sin(a + b) * c)\n", [0, 1]),
    "broadcast_to": ("param p : [4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
                     "loss = sum(broadcast_to(p, [3, 4]) * c)\n", [0]),
    "concat": ("param a : [3, 2] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 6]\n"
               "loss = sum(concat([a, b], axis: 1) * c)\n", [0, 1]),
    "conv2d": ("param x : [2, 3, 6, 6] = normal(std: 1.0)\nparam w : [4, 3, 3, 3] = normal(std: 1.0)\n"
               "input c : f32[2, 4, 3, 3]\nloss = sum(conv2d(x, w, stride: 2, padding: 1) * c)\n", [0, 1]),
    "conv2d_transpose": ("param x : [2, 4, 3, 3] = normal(std: 1.0)\nparam w : [4, 3, 3, 3] = normal(std: 1.0)\n"
                         "input c : f32[2, 3, 5, 5]\nloss = sum(conv2d_transpose(x, w, stride: 2, padding: 1) * c)\n",
                         [0, 1]),
    "conv2d_filter_grad": ("param x : [2, 3, 5, 5] = normal(std: 1.0)\nparam v : [2, 4, 3, 3] = normal(std: 1.0)\n"
                           "input w : f32[4, 3, 3, 3]\ninput c : f32[4, 3, 3, 3]\n"
                           "dw = grad(sum(conv2d(x, w) * v), w)\nloss = sum(dw * c)\n", [0, 1]),
    "div": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
            "loss = sum(a / (2 + sin(b)) * c)\n", [0, 1]),
    "log": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\nloss = sum(log(2 + sin(p)) * c)\n", [0]),
    "log1p": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\nloss = sum(log1p(1 + sin(p)) * c)\n", [0]),
    "cumsum": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\nloss = sum(cumsum(p, 1) * c)\n", [0]),
    "flip": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\nloss = sum(flip(p, axis: 1) * c)\n", [0]),
    "pad": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[4, 7]\n"
            "loss = sum(pad(p, [[1, 0], [2, 1]], value: 0.5) * c)\n", [0]),
    "logsumexp": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3]\n"
                  "loss = sum(logsumexp(p, axis: 1) * c)\n", [0]),
    "matmul": ("param a : [2, 3, 4] = normal(std: 1.0)\nparam b : [4, 5] = normal(std: 1.0)\n"
               "input c : f32[2, 3, 5]\nloss = sum((a @ b) * c)\n", [0, 1]),
    "max_pool2d": ("param x : [2, 3, 4, 4] = normal(std: 1.0)\ninput c : f32[2, 3, 2, 2]\n"
                   "loss = sum(max_pool2d(x, 2) * c)\n", [0]),
    "max_pool2d_grad": ("input x : f32[2, 3, 4, 4]\nparam v : [2, 3, 2, 2] = normal(std: 1.0)\n"
                        "input c : f32[2, 3, 4, 4]\n"
                        "dx = grad(sum(max_pool2d(x, 2) * v), x)\nloss = sum(dx * c)\n", [1]),
    "max_pool2d_select": ("input x : f32[2, 3, 4, 4]\ninput v : f32[2, 3, 2, 2]\n"
                          "param u : [2, 3, 4, 4] = normal(std: 1.0)\ninput c : f32[2, 3, 2, 2]\n"
                          "dx = grad(sum(max_pool2d(x, 2) * v), x)\n"
                          "dv = grad(sum(dx * u), v)\nloss = sum(dv * c)\n", [1]),
    "maximum": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
                "loss = sum(maximum(a, b) * c)\n", [0, 1]),
    "mul": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\n"
            "loss = sum(sin(a * b))\n", [0, 1]),
    "neg": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\nloss = sum(sin(-p) * c)\n", [0]),
    "patches2d": ("param x : [2, 3, 4, 4] = normal(std: 1.0)\ninput c : f32[2, 3, 2, 2]\n"
                  "loss = sum(avg_pool2d(x, 2) * c)\n", [0]),
    "patches2d_transpose": ("input x : f32[2, 3, 4, 4]\nparam v : [2, 3, 2, 2] = normal(std: 1.0)\n"
                            "input c : f32[2, 3, 4, 4]\n"
                            "dx = grad(sum(avg_pool2d(x, 2) * v), x)\nloss = sum(dx * c)\n", [0]),
    "pow": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
            "loss = sum((2 + sin(a)) ** b * c)\n", [0, 1]),
    "reduce_max": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3]\nloss = sum(max(p, axis: 1) * c)\n", [0]),
    "reduce_sum": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[4]\n"
                   "loss = sum(sin(sum(p, axis: 0)) * c)\n", [0]),
    "reshape": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[4, 3]\nloss = sum(reshape(p, [4, 3]) * c)\n",
                [0]),
    "scatter_add": ("input table : f32[5, 3]\ninput rows : i64[4]\nparam v : [4, 3] = normal(std: 1.0)\n"
                    "input c : f32[5, 3]\n"
                    "dtable = grad(sum(take(table, rows) * v), table)\nloss = sum(dtable * c)\n", [0]),
    "slice": ("param p : [5, 4] = normal(std: 1.0)\ninput c : f32[2, 4]\nloss = sum(p[1:3] * c)\n", [0]),
    "softmax": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
                "loss = sum(softmax(p, axis: -1) * c)\n", [0]),
    "softmax_cross_entropy": ("param p : [3, 4] = normal(std: 1.0)\ninput y : i64[3]\ninput c : f32[3]\n"
                              "loss = sum(softmax_cross_entropy(p, y) * c)\n", [0]),
    "softmax_cross_entropy_grad": ("param p : [3, 4] = normal(std: 1.0)\ninput y : i64[3]\n"
                                   "input c : f32[3, 4]\n"
                                   "dp = grad(sum(softmax_cross_entropy(p, y)), p)\nloss = sum(dp * c)\n", [0]),
    "sub": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
            "loss = sum(sin(a - b) * c)\n", [0, 1]),
    "take": ("param table : [5, 3] = normal(std: 1.0)\ninput rows : i64[4]\ninput c : f32[4, 3]\n"
             "loss = sum(take(table, rows) * c)\n", [0]),
    "transpose": ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[4, 3]\nloss = sum(transpose(p) * c)\n", [0]),
    "unslice": ("input x : f32[5, 4]\nparam v : [2, 4] = normal(std: 1.0)\ninput c : f32[5, 4]\n"
                "dx = grad(sum(x[1:3] * v), x)\nloss = sum(dx * c)\n", [0]),
    # gradcheck checks a training step, which takes training(a, b)'s first operand (test_gradients.py checks
    # the second, as evaluation takes it)
    "training": ("param a : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
                 "loss = sum(sin(training(a, 2 * c)) * c)\n", [0]),
    "where": ("param a : [3, 4] = normal(std: 1.0)\nparam b : [3, 4] = normal(std: 1.0)\n"
              "input x : f32[3, 4]\ninput c : f32[3, 4]\nloss = sum(where(x > 0, a, b) * c)\n", [1, 2]),
}

# and each builtin that is a primitive of its own name (`surface` in its record) with a rule, on a param, unless
# the table has a program for it (log's operand must be positive): a new one is checked with no line here
RULE_PROGRAMS |= {name: ("param p : [3, 4] = normal(std: 1.0)\ninput c : f32[3, 4]\n"
                         f"loss = sum({name}(p) * c)\n", [0])
                  for name, prim in registry.surface().items() if prim.vjp is not None and name not in RULE_PROGRAMS}

# ops with a rule that no program can send a gradient through
NOT_IN_A_PROGRAM = {
    "cast": "a program has one float precision (the one it is compiled for), so it never casts float to float, "
            "the only cast with a gradient; test_the_cast_rule_is_checked_on_a_graph_of_its_own checks it",
}

CASES = [(op, operand) for op, (_, operands) in RULE_PROGRAMS.items() for operand in operands]


def _scaled(vjp, operand: int, factor: float):
    """`vjp` with operand `operand`'s cotangent multiplied by `factor`."""
    def broken(e, node, g):
        rules = vjp(e, node, g)
        rule = rules[operand]
        rules[operand] = lambda: e("mul", rule(), e.const(factor, e.dtype(node.operands[operand])))
        return rules
    return broken


def _checked(op: str):
    """The program of `op`, compiled in float64, and a feed of random inputs."""
    program = gradlang.compile(RULE_PROGRAMS[op][0], dtype="float64")
    return program, random_feed(program, 2, np.random.default_rng(0))


def test_every_rule_has_a_program_or_a_reason():
    with_rules = {name for name, prim in registry.all_primitives().items() if prim.vjp is not None}
    assert set(RULE_PROGRAMS) | set(NOT_IN_A_PROGRAM) == with_rules
    assert not set(RULE_PROGRAMS) & set(NOT_IN_A_PROGRAM)


@pytest.mark.parametrize("op", RULE_PROGRAMS)
def test_each_program_sends_the_gradient_through_the_op_and_passes(op):
    """The op's rule gives a cotangent for exactly the listed operands, each depending on a param, and
    with the rules as they are both checks pass."""
    program, feed = _checked(op)
    graph = program.elaborated.graph.copy()
    loss = graph.outputs[program.loss_output()]
    on_path = graph.reachable([loss]) & graph.reachable(list(graph.params.values()), forward=True)
    nodes = [n for n in on_path if graph.op(n) == op]
    assert nodes, f"the program of {op} does not use it between the params and the loss"
    ref = graph.ref(nodes[0])
    g = graph.add("input", (), {"name": "g", "shape": ref.shape, "dtype": ref.dtype})
    rules = registry.get(op).vjp(Emit(graph, None, "grad"), ref, g)
    assert [i for i, rule in enumerate(rules) if rule is not None and ref.operands[i] in on_path] \
        == RULE_PROGRAMS[op][1]
    rng = np.random.default_rng(0)
    assert all(p.error <= DEFAULT_TOLERANCE for p in check_params(program, feed, rng))
    assert check_ops(program, feed, rng)[1] == []


@pytest.mark.parametrize("factor", [1.01, 0.0], ids=["one_percent_off", "dropped"])
@pytest.mark.parametrize("op, operand", CASES)
def test_a_wrong_rule_is_caught_by_both_checks(op, operand, factor, monkeypatch):
    program, feed = _checked(op)
    prim = registry.get(op)
    monkeypatch.setitem(registry._REGISTRY, op, dataclasses.replace(prim, vjp=_scaled(prim.vjp, operand, factor)))
    rng = np.random.default_rng(0)
    assert max(p.error for p in check_params(program, feed, rng)) > DEFAULT_TOLERANCE
    failures = check_ops(program, feed, rng)[1]
    assert (op, operand) in [(f.op, f.operand) for f in failures]


def test_the_cast_rule_is_checked_on_a_graph_of_its_own(monkeypatch):
    graph = Graph()
    x = graph.add("input", (), {"name": "x", "shape": (3, 4), "dtype": "f32"})
    cast = graph.add("cast", (x,), {"dtype": "f64"})
    values = {x: np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)}
    values[cast] = values[x].astype(np.float64)
    assert check_op(graph, cast, values, np.random.default_rng(0)) == []
    prim = registry.get("cast")
    monkeypatch.setitem(registry._REGISTRY, "cast", dataclasses.replace(prim, vjp=_scaled(prim.vjp, 0, 1.01)))
    assert [f.op for f in check_op(graph, cast, values, np.random.default_rng(0))] == ["cast"]
