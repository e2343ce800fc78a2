"""Train settings given outside the file: `gradlang run --set NAME=VALUE`, `compile(settings=…)` and
`Program.train(optimizer=…)`, checked and located as the file's settings are."""
from pathlib import Path

import numpy as np
import pytest

import gradlang
from gradlang.cli import main
from gradlang.errors import GradError
from gradlang.frontend.plan import OPTIMIZERS, TRAIN_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
LINE = """
data points = line(n: 128, slope: 2.0, intercept: 1.0, noise: 0.05, seed: 3)
input x : f32[N]
input y : f32[N]
param a : []
param b : []
loss = mean((y - a - b * x) ** 2)
train {
  data      = points
  batch     = 32
  epochs    = 2
  optimizer = sgd(lr: 0.1)
}
"""


def _line_program(settings=None, **kw):
    return gradlang.compile(LINE, settings=settings, **kw)


def test_a_setting_is_replaced_and_one_is_added():
    prog = _line_program({"optimizer": "adam(lr: 0.05)", "batch": 64, "seed": 5, "validation": 0.25})
    assert prog.plan["optimizer"].kind == "adam" and dict(prog.plan["optimizer"].settings)["lr"] == 0.05
    assert prog.plan["batch"] == 64 and prog.plan["epochs"] == 2
    assert prog.plan["seed"] == 5 and prog.seed == 5 and prog.plan["validation"] == 0.25


def test_a_python_bool_and_number_are_written_as_gradlang():
    prog = _line_program({"optimizer": "sgd(lr: 0.1, nesterov: true, momentum: 0.5)", "epochs": 3})
    assert dict(prog.plan["optimizer"].settings)["nesterov"] is True and prog.plan["epochs"] == 3


def test_an_overridden_optimizer_trains_as_if_written_in_the_file():
    written = gradlang.compile(LINE.replace("sgd(lr: 0.1)", "adam(lr: 0.05)"))
    overridden = _line_program({"optimizer": "adam(lr: 0.05)"})
    written.train(), overridden.train()
    for name in written.param_names:
        np.testing.assert_array_equal(written.params[name], overridden.params[name])


def test_an_override_may_use_step_and_the_programs_names():
    source = LINE.replace("train {", "rate = 0.2\ntrain {")
    prog = gradlang.compile(source, settings={"optimizer": "sgd(lr: rate * 0.5 ** floor(step / 4))"})
    assert prog.runner.learning_rate(0) == pytest.approx(0.2) and prog.runner.learning_rate(4) == pytest.approx(0.1)


def test_without_a_train_block_the_settings_make_one():
    prog = gradlang.compile("param w : []\nloss = (w - 3.0) ** 2\n",
                            settings={"steps": 50, "optimizer": "sgd(lr: 0.1)"})
    prog.train()
    assert prog.params["w"] == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize("settings, message, caret", [
    ({"optimzer": "adam(lr: 0.1)"}, "unknown train setting 'optimzer' (did you mean 'optimizer'?)", "^^^^^^^^"),
    ({"batch": "0"}, "batch must be ≥ 1, got 0", "^"),
    ({"optimizer": "adam(lr: -1)"}, "lr must be ≥ 0", "^^^^^^"),
    ({"optimizer": "sgd(learning_rate: 0.1)"}, "learning_rate", "^"),
    ({"epochs": "2 +"}, "syntax error", "^"),
    ({"optimizer": "adm(lr: 1)"}, "did you mean 'adam'?", "^^^"),
])
def test_a_wrong_setting_is_located_in_its_own_text(settings, message, caret):
    with pytest.raises(GradError) as caught:
        _line_program(settings)
    text = caught.value.format()
    assert text.startswith("<settings>:1:") and message in text and caret in text, text
    assert f" 1 | train {{ {next(iter(settings))} = " in text, text


def test_a_file_name_without_quotes_is_refused_with_the_quoted_form():
    with pytest.raises(GradError, match="""save takes text in quotes, as in the file: save='"m.npz"'"""):
        _line_program({"save": "m.npz"})
    assert _line_program({"save": '"m.npz"'}).plan["save"] == "m.npz"


def test_train_optimizer_replaces_the_optimizer_from_then_on():
    prog = _line_program()
    result = prog.train(optimizer="adam(lr: 0.05)", epochs=1)
    assert prog.plan["optimizer"].kind == "adam" and result.learning_rate == pytest.approx(0.05)
    assert {key.split(".")[0] for key in prog.optimizer_state()} == {"t", "m", "v"}   # Adam's moments
    steps = prog.steps_taken
    prog.train(epochs=1)
    assert prog.steps_taken == steps + 4 and prog.plan["optimizer"].kind == "adam"


def test_train_optimizer_matches_a_program_compiled_with_it():
    a, b = _line_program({"optimizer": "sgd(lr: 0.05, momentum: 0.9)"}), _line_program()
    a.train(epochs=1), b.train(optimizer="sgd(lr: 0.05, momentum: 0.9)", epochs=1)
    for name in a.param_names:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_train_optimizer_errors_are_located():
    prog = _line_program()
    with pytest.raises(GradError) as caught:
        prog.train(optimizer="adam(lr: 0.1, beta: 0.9)")
    assert caught.value.format().startswith("<optimizer>:1:"), caught.value.format()
    assert prog.plan["optimizer"].kind == "sgd"   # nothing changed


def test_a_phased_program_refuses_one_optimizer():
    with pytest.raises(GradError, match="each phase names its own optimizer") as caught:
        gradlang.compile(ROOT / "examples" / "gan.grad", settings={"optimizer": "adam(lr: 0.1)"})
    assert caught.value.format().startswith("<settings>:1:")


# ---- the command line --------------------------------------------------------------------------------

def test_run_set_trains_with_the_settings(tmp_path, capsys):
    path = tmp_path / "line.grad"
    path.write_text(LINE)
    code = main(["run", str(path), "--set", "optimizer=adam(lr: 0.05)", "--set", "batch=64", "--json",
                 "--out", str(tmp_path / "p.npz")])
    out = capsys.readouterr().out
    assert code == 0 and '"steps": 4' in out, out   # 128 examples, batch 64, 2 epochs


def test_run_set_error_shows_the_setting_with_a_caret(tmp_path, capsys):
    path = tmp_path / "line.grad"
    path.write_text(LINE)
    assert main(["run", str(path), "--set", "batch=-2"]) == 1
    err = capsys.readouterr().err
    assert "--set:1:17: error: batch must be ≥ 1, got -2" in err and " 1 | train { batch = -2 }" in err, err
    assert main(["run", str(path), "--set", "batch"]) == 1
    assert "--set takes NAME=VALUE" in capsys.readouterr().err


def test_run_help_lists_every_setting_and_optimizer(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--set NAME=VALUE" in out
    for name in TRAIN_SETTINGS:
        assert f"\n  {name} " in out, name
    for name in OPTIMIZERS:
        assert f"{name}(" in out, name
