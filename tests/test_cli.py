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
    assert run.config.train.steps == 20 and run.config.seed == 1
    assert run.config.task_config.eval_size == 64
    assert run.status["state"] == "done"


def test_a_verb_under_a_taken_name_is_refused_naming_its_module(monkeypatch):
    import types

    import icl_lab.cli as cli

    monkeypatch.setattr(cli, "VERBS", dict(cli.VERBS))
    mine = types.ModuleType("my_lab.cli_train")
    with pytest.raises(ValueError, match="CLI verb 'train' is already registered by icl_lab.cli.train"):
        cli.register_verb("train", mine)
    cli.register_verb("train", cli.VERBS["train"])  # the same module again: a no-op
    cli.register_verb("mine", mine)
    assert cli.VERBS["mine"] is mine and cli.VERBS["train"].__name__ == "icl_lab.cli.train"


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
    assert run.config.interventions[0].target == "induction"
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
    from icl_lab.store import load_run  # an RFM run: no RunConfig, read by the store

    run = load_run(tmp_path / "r")
    assert run.config["rfm"]["op"] == "div" and run.checkpoint_steps == [0, 1, 2, 3]


def test_train_modular_command_prints_memorisation_and_generalisation(capsys, tmp_path):
    code = main([
        "train", "modular", "--steps", "20", "--device", "cpu", "--out", str(tmp_path / "g"), "--no-progress",
        "--set", "p=11", "--set", "d_model=32", "--set", "d_mlp=64", "--set", "eval_every=10", "--set", "checkpoint_every=10",
    ])
    out = capsys.readouterr().out
    # each milestone the modular task declares (s₁, s₂), reached or not, by its label
    assert code == 0 and "s₁ train acc = 1 (train_accuracy>=1): " in out and "s₂ test acc ≥ 0.95 (test_accuracy>=0.95): " in out
    assert "final key frequencies" in out


# -- start-up: answering --help, presets and refusals must not import TransformerLens --------
STARTUP_PROBE = r'''
import json, sys
from icl_lab.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    results.append([argv, code, "transformer_lens" in sys.modules])
print(json.dumps(results))
'''


@pytest.mark.slow
def test_help_presets_and_refusals_do_not_import_transformer_lens(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "bad_config").mkdir()
    (tmp_path / "bad_config" / "config.json").write_text("{oops")
    cases = [
        (["presets"], 0),
        (["--help"], 0),
        (["train", "--help"], 0),
        (["train", "bursty", "--set", "bogus=1", "--out", str(tmp_path / "r")], 2),
        (["train", "bursty", "--seed", "99999999999999999999", "--out", str(tmp_path / "r")], 2),
        (["measure", str(tmp_path / "bad_config"), "--device", "cpu"], 2),
        (["ablate", str(tmp_path)], 2),
        (["resume", str(tmp_path / "bad_config")], 2),
        (["experiment", "nope"], 2),
    ]
    proc = subprocess.run([sys.executable, "-c", STARTUP_PROBE, json.dumps([argv for argv, _ in cases])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (argv, expected), (_, code, loaded) in zip(cases, results):
        assert code == expected, (argv, code, proc.stderr)
        assert not loaded, f"{argv} imported transformer_lens"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_config"]


# -- refusals: exit 2, one line naming the bad value, nothing written ------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "bursty", "--seed", "99999999999999999999"], ["--seed", "99999999999999999999", "9223372036854775807"]),
        (["train", "bursty", "--seed", "-1"], ["--seed", "-1", "0..9223372036854775807"]),
        (["train", "bursty", "--set", "train.lr=NaN"], ["train.lr", "finite", "nan"]),
        (["train", "bursty", "--set", "train.lr=Infinity"], ["train.lr", "finite", "inf"]),
        (["train", "bursty", "--set", "seed=99999999999999999999"], ["99999999999999999999"]),
        (["train", "bursty", "--steps", "99999999999999999999"], ["--steps", "99999999999999999999"]),
        (["rfm", "--seed", "99999999999999999999"], ["--seed", "99999999999999999999"]),
        (["rfm", "--bandwidth", "nan"], ["--bandwidth", "nan", "finite"]),
        (["rfm", "--ridge", "inf"], ["--ridge", "inf", "finite"]),
        (["measure", "somewhere", "--device", "tpu"], ["--device", "tpu", "auto", "cpu", "cuda"]),
        (["experiment", "singh-clamps", "--seeds", "0,99999999999999999999"], ["--seeds", "99999999999999999999"]),
        (["experiment", "singh-clamps", "--steps", "0"], ["--steps", "0"]),
        (["experiment", "grokking"], ["grokking", "anti-grokking", "singh-clamps"]),
        (["sweep", "missing.toml", "--out", "s", "--workers", "0"], ["--workers", "0"]),
    ],
)
def test_out_of_range_values_are_refused(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] in ("train", "rfm"):
        args = args + ["--out", str(tmp_path / "run")]
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"icl-lab {args[0]}: error: ")
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []


def test_unknown_experiment_name_lists_the_valid_ones(capsys):
    from icl_lab.cli.experiment import RUNNERS
    from icl_lab.experiments import EXPERIMENTS

    assert sorted(RUNNERS) == sorted(EXPERIMENTS)  # every documented experiment runs, and only those
    code, err = run_cli(["experiment", "singh"], capsys)
    assert code == 2 and "'singh'" in err
    for name in EXPERIMENTS:
        assert name in err


@pytest.mark.parametrize(
    "verb",
    [
        ["train", "bursty"],
        ["rfm"],
        ["rfm", "--train-fracs", "0.3,0.5"],
        ["experiment", "singh-clamps"],
        ["sweep", "SPEC"],
    ],
)
def test_out_on_a_file_is_refused(verb, capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    spec = tmp_path / "s.toml"
    spec.write_text('[sweep]\ntask = "bursty"\npreset = "small"\n[axes]\nseed = [0]\n')
    argv = [str(spec) if a == "SPEC" else a for a in verb]
    for out in (afile, afile / "run"):
        code, err = run_cli(argv + ["--out", str(out)], capsys)
        assert code == 2 and str(afile) in err and "icl-lab " + verb[0] in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "s.toml"]
    assert afile.read_text() == "not a folder"


def _read_only_folder(tmp_path):
    import os
    from pathlib import Path

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/proc/1")):  # root may write anywhere but in /proc
        if candidate.is_dir() and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no folder this user cannot write to")


@pytest.mark.parametrize("verb", [["train", "bursty"], ["rfm"], ["experiment", "anti-grokking"]])
def test_out_in_a_read_only_place_is_refused(verb, capsys, tmp_path):
    folder = _read_only_folder(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    try:
        code, err = run_cli(verb + ["--out", str(folder / "run")], capsys)
    finally:
        (tmp_path / "read-only").chmod(0o755)
    assert code == 2 and str(folder) in err and ("cannot write" in err or "permission" in err), err
    assert sorted(p.name for p in folder.iterdir()) == before


# -- corrupt run files: the library's RunError, reported as a refusal -----------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main([
        "train", "bursty", "--steps", "10", "--device", "cpu", "--out", str(run), "--no-progress",
        "--set", "task.num_classes=64", "--set", "task.num_labels=8", "--set", "eval_size=32",
        "--set", "model.d_model=16", "--set", "train.batch_size=8", "--set", "train.eval_every=5",
        "--set", "train.checkpoint_every=5",
    ]) == 0
    return run


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _corrupt(run, relative, content: bytes):
    import shutil

    copy = run.parent.parent / f"corrupt-{abs(hash((relative, content)))}"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run, copy)
    (copy / relative).write_bytes(content)
    return copy


def _safetensors_bytes(tensors):
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        save_file(tensors, str(Path(folder) / "x.safetensors"))
        return (Path(folder) / "x.safetensors").read_bytes()


@pytest.mark.parametrize(
    "verb, relative, content, words",
    [
        (["measure"], "config.json", b"{oops", ["config.json", "JSON"]),
        (["ablate"], "config.json", b"[1, 2]", ["config.json", "list"]),
        (["patch"], "config.json", b'{"task": "bursty", "model": 3}', ["config.json"]),
        (["resume"], "config.json", b"\xff\xfe", ["config.json"]),
        (["resume"], "status.json", b"{oops", ["status.json"]),
        (["measure", "--measures", "weight_norm"], "metrics.parquet", b"not parquet", ["metrics.parquet"]),
        (["measure", "--measures", "weight_norm"], "checkpoints/step_10.safetensors", b"garbage", ["step_10.safetensors"]),
        (["ablate"], "checkpoints/step_10.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{", ["step_10.safetensors"]),
        (["patch"], "checkpoints/step_10.safetensors", b"", ["step_10.safetensors"]),
    ],
)
def test_corrupt_run_files_are_refused_and_left_alone(tiny_run, verb, relative, content, words, capsys):
    run = _corrupt(tiny_run, relative, content)
    before = _snapshot(run)
    code, err = run_cli([verb[0], str(run), *verb[1:]] + (["--no-progress"] if verb[0] in ("measure", "resume") else []), capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"icl-lab {verb[0]}: error: "), err
    for word in words:
        assert word in err, (word, err)
    assert _snapshot(run) == before


# A readable safetensors file whose tensors are not the model's (foreign names or shapes).
@pytest.mark.parametrize("tensors", ["foreign key", "wrong shape"])
def test_checkpoint_with_foreign_tensors_is_refused(tiny_run, tensors, capsys):
    import torch
    from safetensors.torch import load_file

    state = load_file(str(tiny_run / "checkpoints" / "step_10.safetensors"))
    if tensors == "foreign key":
        state = {"x": torch.zeros(2)}
    else:
        state = {key: torch.zeros(3, *value.shape) for key, value in state.items()}
    run = _corrupt(tiny_run, "checkpoints/step_10.safetensors", _safetensors_bytes(state))
    before = _snapshot(run)
    code, err = run_cli(["ablate", str(run)], capsys)
    assert code == 2 and "step_10" in err, err
    assert _snapshot(run) == before


def test_resume_of_a_finished_run_changes_nothing(tiny_run, capsys):
    before = _snapshot(tiny_run)
    assert main(["resume", str(tiny_run), "--no-progress"]) == 0
    assert "is done; nothing to resume" in capsys.readouterr().out
    assert _snapshot(tiny_run) == before
