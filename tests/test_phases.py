"""Training in phases (`phases = [phase(…), …]` in the train block): each phase updates its own params on
the gradient of its own loss with its own optimizer, `repeat` times per step on fresh mini-batches;
checkpoints hold every phase's optimizer state; mistakes are reported at their place in the source."""
import json

import numpy as np
import pytest
from test_errors import case, check_report, run_main
from test_training import Interrupt, StopAfterEpoch

import gradlang
from gradlang import GradError
from gradlang.cli import main
from gradlang.runtime.train import step_groups

# two players on one shared quantity: u wants u·v·x near 1, v wants it near −1
GAME = """
input x : f32[B]
param u : [] = 0.5
param v : [] = 1.5
loss a = mean((u * v * x - 1) ** 2)
loss b = mean((u * v * x + 1) ** 2) + 0.1 * v * v
train {{
  phases = [phase(loss: a, params: [u], optimizer: sgd(lr: 0.1), repeat: {repeat}),
            phase(loss: b, params: v, optimizer: sgd(lr: 0.2 * (step < 1) + 0.05))]
}}
"""


def game(repeat=1):
    return gradlang.compile(GAME.format(repeat=repeat), dtype="float64")


def test_each_phase_steps_its_own_params_on_its_own_loss_in_turn():
    prog, reference = game(repeat=2), game()
    feeds = [{"x": np.array([1.0, 2.0])}, {"x": np.array([0.5])}, {"x": np.array([3.0, -1.0, 2.0])}]
    for step in range(2):
        u, v = float(prog.params["u"]), float(prog.params["v"])
        total = prog.step(feeds)
        for feed in feeds[:2]:          # the first phase, twice, each on its own batch; v stays put
            reference.set_params({"u": u, "v": v})
            u -= 0.1 * reference.gradients(feed, "a")["u"]
        reference.set_params({"u": u, "v": v})   # the second phase sees the updated u
        v -= (0.25 if step == 0 else 0.05) * reference.gradients(feeds[2], "b")["v"]
        assert float(prog.params["u"]) == pytest.approx(u, rel=1e-12)
        assert float(prog.params["v"]) == pytest.approx(v, rel=1e-12)
        assert set(prog.phase_losses) == {"a", "b"} and total == pytest.approx(sum(prog.phase_losses.values()))
    assert prog.steps_taken == 2


def test_a_phase_differentiates_only_its_own_params():
    prog = gradlang.compile("""
        input x : f32[B, 4]
        param W1 : [4, 4] = ones
        param W2 : [4, 1] = ones
        loss fit = mean((x @ W1) @ W2)
    """)
    everything = prog.gradient_graph("fit")
    second = prog.gradient_graph("fit", params=("W2",))
    assert {o for o in second.outputs if o.startswith("grad:")} == {"grad:W2"}
    backward = lambda g: sum(1 for n in g.nx.nodes if g.data(n)["role"] == "grad")   # noqa: E731
    assert backward(second) < backward(everything)
    feed = {"x": np.arange(8.0).reshape(2, 4)}
    np.testing.assert_allclose(prog.run(["grad:W2"], feed, second)[0], prog.gradients(feed, "fit")["W2"])


def test_a_step_with_repeats_takes_the_next_batches_of_the_shuffled_data():
    source = """
        data points = line(n: 10, slope: 0.0, intercept: 0.0, noise: 1.0, seed: 4)
        input x : f32[N]
        input y : f32[N]
        param w : [] = zeros
        param c : [] = zeros
        loss pull = mean(x) * w + 0 * mean(y)
        loss push = -mean(x) * c
        train {
          data = points
          batch = 3
          seed = 5
          phases = [phase(loss: pull, params: [w], optimizer: sgd(lr: 1.0), repeat: 2),
                    phase(loss: push, params: [c], optimizer: sgd(lr: 1.0))]
        }
    """
    prog = gradlang.compile(source, dtype="float64")
    x = prog.load_data()["x"]
    result = prog.train(steps=1)
    order = np.random.default_rng(5).permutation(10)           # the epoch's shuffle (zeros draw nothing)
    batches = [order[i:i + 3] for i in range(0, 10, 3)]          # 4 batches: 2 steps of 3 updates an epoch
    assert prog.updates_per_step == 3 and result.epochs == pytest.approx(0.5)
    assert float(prog.params["w"]) == pytest.approx(-x[batches[0]].mean() - x[batches[1]].mean())
    assert float(prog.params["c"]) == pytest.approx(x[batches[2]].mean())


def test_short_last_group_of_an_epoch_reuses_its_first_batches():
    assert list(step_groups(iter("abcd"), 3)) == [list("abc"), list("dab")]
    assert list(step_groups(iter("abcd"), 1)) == list("abcd")
    with pytest.raises(GradError, match="takes one feed each"):
        game(repeat=2).step([{"x": np.ones(2)}])


GAN = """
import nn
data ring = gaussian_ring(n: 600, modes: 4, radius: 2.0, std: 0.05)
input x : f32[B, 2]
generator = nn.mlp([2, 8, 2], activation: relu)
critic = nn.mlp([2, 8, 1], activation: relu)
fake = generator(random_normal([x.shape[0], 2]))
loss d_loss = mean(softplus(-critic(x)[:, 0])) + mean(softplus(critic(fake)[:, 0]))
loss g_loss = mean(softplus(-critic(fake)[:, 0]))
train {
  data = ring
  batch = 64
  epochs = 6
  seed = 3
  phases = [phase(loss: d_loss, params: critic, optimizer: adam(lr: 0.01, beta1: 0.5), repeat: 2),
            phase(loss: g_loss, params: generator, optimizer: rmsprop(lr: 0.005 * (step < 10) + 0.001))]
}
"""


def test_interrupted_and_resumed_phased_run_ends_with_the_same_params(tmp_path):
    straight = gradlang.compile(GAN)
    straight.train()

    ckpt = tmp_path / "gan.ckpt.npz"
    with pytest.raises(Interrupt):
        gradlang.compile(GAN).train(checkpoint=ckpt, reporter=StopAfterEpoch(3))
    with np.load(ckpt) as saved:   # each phase's optimizer state, by its loss
        assert {"optimizer/d_loss/m.0", "optimizer/d_loss/t", "optimizer/g_loss/square_avg.0"} <= set(saved.files)
    resumed = gradlang.compile(GAN)
    result = resumed.train(checkpoint=ckpt, resume=True)
    assert result.steps == 6 * 4 and len(result.epoch_log) == 6      # 10 batches, 3 a step: 4 steps an epoch
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value)


def test_run_reports_each_phase_loss(tmp_path, capsys):
    program = tmp_path / "gan.grad"
    program.write_text(GAN)
    assert main(["run", str(program), "--out", str(tmp_path / "p.npz")]) == 0
    captured = capsys.readouterr()
    assert "step 24/24  d_loss " in captured.err and " g_loss " in captured.err
    assert "  d_loss " in captured.out and "  g_loss " in captured.out   # the final numbers, training set
    assert main(["run", str(program), "--json", "--out", str(tmp_path / "p.npz")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loss"] == pytest.approx(result["metrics"]["d_loss"] + result["metrics"]["g_loss"], rel=1e-6)


def test_the_api_asks_which_loss_and_the_ir_shows_what_a_step_differentiates(capsys, tmp_path):
    prog = gradlang.compile(GAN.replace("input x : f32[B, 2]", "input x : f32[B, 2]\nparam idle : [2]")
                            .replace("fake = generator(", "fake = idle + generator("))
    with pytest.raises(GradError, match=r"trains in phases, each on its own loss \(d_loss, g_loss\)"):
        prog.loss(prog.load_data())
    with pytest.raises(GradError, match="each with its own optimizer"):
        prog.optimizer()
    graph = prog.gradient_graph()     # the step's: each phase's loss for its own params, zero for the rest
    assert {o for o in graph.outputs if o.startswith("grad:")} == {f"grad:{p}" for p in prog.params}
    feed = {"x": prog.load_data()["x"][:8]}
    assert not prog.run(["grad:idle"], feed, graph)[0].any()
    assert prog.run(["grad:generator.layers.0.W"], feed, graph)[0].any()
    assert prog.loss_output() == "loss:d_loss"      # what tools that check one loss (gradcheck) check
    program = tmp_path / "gan.grad"
    program.write_text(GAN)
    assert main(["ir", str(program), "--grad"]) == 0 and "%dfake" in capsys.readouterr().out
    assert main(["gradcheck", str(program)]) == 0


OK_PHASES = ("  phases = [phase(loss: a, params: [u]), phase(loss: b, params: [v])]\n")
TWO = "input x : f32[B]\nparam u : []\nparam v : []\nloss a = mean(x * u)\nloss b = mean(x * v * u)\n"

CASES = [
    case("phase-loss-is-not-a-loss", TWO + "train {\n  phases = [phase(loss: x, params: [u])]\n}\n", 7, 13,
         "phase(loss: x, params: [u])", "phase(loss: …) must be a loss the program declares", "f32[B]"),
    case("phase-loss-unknown-name", TWO + "train {\n  phases = [phase(loss: c, params: [u])]\n}\n", 7, 25, "c",
         "unknown name 'c'"),
    case("phase-params-not-params", TWO + "train {\n  phases = [phase(loss: a, params: [u, 2 * v])]\n}\n",
         7, 13, "phase(loss: a, params: [u, 2 * v])", "must be params of the program"),
    case("phase-params-overlap", TWO + "train {\n  phases = [phase(loss: a, params: [u]),\n"
         "            phase(loss: b, params: [v, u])]\n}\n", 8, 13, "phase(loss: b, params: [v, u])",
         "param u is in two phases", "the a phase's"),
    case("phase-same-loss-twice",
         TWO + "train {\n  phases = [phase(loss: a, params: [u]), phase(loss: a, params: v)]\n}\n",
         7, 42, "phase(loss: a, params: v)", "two phases train the loss a"),
    case("phases-with-optimizer", TWO + "train {\n  optimizer = adam()\n" + OK_PHASES + "}\n", 7, 15, "adam()",
         "`optimizer` and `phases` exclude each other"),
    case("phases-with-loss", TWO + "train {\n" + OK_PHASES + "  loss = a\n}\n", 8, 10, "a",
         "`loss` and `phases` exclude each other"),
    case("phase-repeat-zero", TWO + "train {\n  phases = [phase(loss: a, params: u, repeat: 0)]\n}\n", 7, 13,
         "phase(loss: a, params: u, repeat: 0)", "repeat: …) must be an integer ≥ 1"),
    case("phases-not-a-list-of-phases", TWO + "train {\n  phases = [phase(loss: a, params: u), 3]\n}\n", 7, 12,
         "[phase(loss: a, params: u), 3]", "phases must be a list of phase(", "got an integer"),
    case("phases-empty", TWO + "train {\n  phases = []\n}\n", 7, 12, "[]", "phases is empty"),
    case("phase-optimizer-not-an-optimizer",
         TWO + "train {\n  phases = [phase(loss: a, params: u, optimizer: 0.1)]\n}\n",
         7, 13, "phase(loss: a, params: u, optimizer: 0.1)", "phase(optimizer: …) must be an optimizer"),
]


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_phase_mistakes_are_reported_at_their_place(c, tmp_path, capsys):
    program = tmp_path / "prog.grad"
    program.write_text(c.source, encoding="utf-8")
    code, _, err = run_main([c.cmd, str(program)], capsys)
    check_report(err, c.source, program, c)
    assert code == 1, err


def test_a_phase_whose_loss_is_not_finite_stops_before_its_update():
    prog = gradlang.compile(GAME.format(repeat=1).replace("lr: 0.1", "lr: 1e30"), dtype="float64")
    with pytest.raises(GradError, match="the loss became inf at step 2") as info:
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(3):
                prog.step({"x": np.array([1.0, 2.0])})
    assert info.value.span.line == 6                    # loss b, the second phase's
    assert np.isfinite(prog.params["v"]) and prog.steps_taken == 1
