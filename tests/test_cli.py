"""`icl-lab`: bad input refused before any work, with the bad value and valid choices named."""

import pytest

from icl_lab.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "bursti"], ["invalid choice", "bursti", "bursty"]),
        (["train", "bursty", "--preset", "smal"], ["smal", "small", "reddy", "singh"]),
        (["train", "bursty", "--set", "task.num_clases=3"], ["task.num_clases", "task.num_classes"]),
        (["train", "bursty", "--set", "bogus=1"], ["bogus", "Valid keys", "train.lr"]),
        (["train", "bursty", "--set", "lr=fast"], ["train.lr", "fast"]),
        (["train", "bursty", "--set", "noequals"], ["key=value", "noequals"]),
        (["train", "bursty", "--set", "task.num_classes=100"], ["K=100", "L=32"]),
        (["train", "bursty", "--set", "optimizer=lion"], ["lion", "adam", "sgd"]),
        (["train", "bursty", "--set", "measures=icl_acc"], ["icl_acc", "icl_accuracy"]),
        (["train", "bursty", "--device", "tpu"], ["tpu", "auto", "cpu", "cuda"]),
        (["train", "bursty", "--steps", "0"], ["--steps", "0"]),
        (["train", "bursty", "--frobnicate"], ["--frobnicate"]),
        (["fly"], ["invalid choice", "fly", "train"]),
    ],
)
def test_bad_input_is_refused_and_nothing_written(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(args + ["--out", str(tmp_path / "run")] if args[0] == "train" and "--frobnicate" not in args else args, capsys)
    assert code == 2
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_dir_refused(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    code, err = run_cli(["train", "bursty", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "--overwrite" in err


def test_train_command_end_to_end(capsys, tmp_path):
    code = main([
        "train", "bursty", "--steps", "20", "--seed", "1", "--device", "cpu", "--out", str(tmp_path / "run"),
        "--set", "task.num_classes=64", "--set", "task.num_labels=8", "--set", "eval_size=64",
        "--set", "train.eval_every=10", "--no-progress",
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "icl_accuracy" in out and str((tmp_path / "run").resolve()) in out
    from icl_lab import load_run

    run = load_run(tmp_path / "run")
    assert run.config["train"]["steps"] == 20 and run.config["seed"] == 1
    assert run.config["task_config"]["eval_size"] == 64
    assert run.status["state"] == "done"


def test_presets_command_lists_parameters(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "bursty/small (default)" in out and "num_classes=2048" in out and "bursty/reddy" in out


def test_train_with_an_intervention_file(capsys, tmp_path):
    spec = tmp_path / "clamp.toml"
    spec.write_text('[[intervention]]\nhook = "blocks.1.attn.hook_pattern"\nheads = [0]\nquery_positions = "query"\ntarget = "induction"\n')
    code = main([
        "train", "bursty", "--steps", "6", "--device", "cpu", "--out", str(tmp_path / "run"),
        "--set", "task.num_classes=64", "--set", "task.num_labels=8", "--set", "eval_size=32",
        "--set", "train.eval_every=3", "--intervention", str(spec), "--no-progress",
    ])
    out = capsys.readouterr().out
    assert code == 0 and "fired" in out
    from icl_lab import load_run

    run = load_run(tmp_path / "run")
    assert run.config["interventions"][0]["target"] == "induction"
    assert run.curve("induction_score.L1H0")["value"].to_list() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "toml, words",
    [
        ('[[intervention]]\nhook = "blocks.1.attn.hook_patern"\n', ["hook_patern", "blocks.1.attn.hook_pattern"]),
        ('[[intervention]]\nhook = "blocks.1.attn.hook_pattern"\nheads = [5]\n', ["heads [5]", "2 heads"]),
        ('[[intervention]]\nhook = "blocks.1.attn.hook_pattern"\ntarget = "inductoin"\n', ["inductoin", "induction"]),
        ('[[intervention]\nhook = "x"\n', ["not valid TOML"]),
    ],
)
def test_bad_intervention_file_refused_before_any_work(toml, words, capsys, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text(toml)
    code, err = run_cli(["train", "bursty", "--out", str(tmp_path / "run"), "--intervention", str(spec)], capsys)
    assert code == 2
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "run").exists()


def test_experiment_refuses_bad_seeds(capsys, tmp_path):
    code, err = run_cli(["experiment", "singh-clamps", "--seeds", "a,b", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "a,b" in err
    code, err = run_cli(["experiment", "singh-clams"], capsys)
    assert code == 2 and "singh-clamps" in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["rfm", "--p", "60"], ["p=60", "prime"]),
        (["rfm", "--op", "pow"], ["pow", "add", "div"]),
        (["rfm", "--train-frac", "1.5"], ["train_fraction", "1.5"]),
        (["rfm", "--kernel", "rbf"], ["rbf", "gaussian", "laplace"]),
        (["rfm", "--train-fracs", "0.3,x"], ["--train-fracs", "x"]),
        (["train", "modular", "--set", "op=pow"], ["pow", "add, sub, mul, div"]),
        (["train", "modular", "--preset", "nanada"], ["nanada", "nanda", "cpu"]),
        (["train", "modular", "--set", "p=100"], ["p=100", "prime"]),
    ],
)
def test_rfm_and_modular_refusals(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(args + ["--out", str(tmp_path / "run")], capsys)
    assert code == 2
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []


def test_rfm_command_end_to_end(capsys, tmp_path):
    code = main(["rfm", "--op", "div", "--p", "11", "--iters", "4", "--device", "cpu", "--out", str(tmp_path / "r"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "test accuracy" in out
    from icl_lab import load_run

    run = load_run(tmp_path / "r")
    assert run.config["rfm"]["op"] == "div" and run.checkpoint_steps == [0, 1, 2, 3]


def test_train_modular_command_prints_memorisation_and_generalisation(capsys, tmp_path):
    code = main([
        "train", "modular", "--steps", "20", "--device", "cpu", "--out", str(tmp_path / "g"), "--no-progress",
        "--set", "p=11", "--set", "d_model=32", "--set", "d_mlp=64", "--set", "eval_every=10", "--set", "checkpoint_every=10",
    ])
    out = capsys.readouterr().out
    assert code == 0 and "train accuracy 1.0 at step" in out and "final key frequencies" in out
