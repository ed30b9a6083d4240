"""Default run folders say what differs from the preset, so commands that differ never collide
and the same command names the same folder again (icl_lab/cli/run_names.py)."""

import pytest

from icl_lab.cli import build_parser, experiment, rfm, train
from icl_lab.cli.run_names import MAX_DIGEST, run_name

CLAMP = '[[intervention]]\nhook = "blocks.1.attn.hook_pattern"\nheads = [0]\nquery_positions = "query"\ntarget = "induction"\n'


def train_out(*argv: str) -> str:
    _, out = train.plan(build_parser().parse_args(["train", *argv]))
    return out.as_posix()


def test_train_names_say_what_the_command_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clamp.toml").write_text(CLAMP)
    assert train_out("modular") == "runs/modular-cpu-seed0"
    assert train_out("modular", "--set", "op=mul") == "runs/modular-cpu-op=mul-seed0"
    # the example: a seed, a --set with a dotted key and an intervention file
    assert train_out("bursty", "--seed", "1", "--set", "train.lr=3e-4", "--intervention", "clamp.toml") == "runs/bursty-small-lr=3e-4-clamp-seed1"
    # sorted by key, the last value of a repeated key, --steps as train.steps, seed and device in their own place
    assert (train_out("modular", "--set", "p=61", "--set", "op=add", "--set", "op=mul", "--steps", "50", "--set", "seed=2", "--device", "cpu")
            == "runs/modular-cpu-op=mul-p=61-steps=50-seed2")
    assert train_out("bursty", "--set", "measures=icl_accuracy,progress") == "runs/bursty-small-measures=icl_accuracy,progress-seed0"


def test_two_commands_differing_only_in_set_get_different_folders_and_the_same_command_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = [("modular",), ("modular", "--set", "op=mul"), ("modular", "--set", "op=sub"), ("modular", "--set", "train.lr=1e-3")]
    names = [train_out(*command) for command in commands]
    assert len(set(names)) == len(commands)
    assert names == [train_out(*command) for command in commands]  # again: the same folders (resume finds them)
    assert train_out("modular", "--set", "op=mul", "--set", "p=61") == train_out("modular", "--set", "p=61", "--set", "op=mul")


def test_long_or_unsafe_digests_are_shortened_with_a_hash_and_stay_distinct():
    long_a = run_name("bursty-small", [f"x{i}=1" for i in range(30)], "seed0")
    long_b = run_name("bursty-small", [f"x{i}=1" for i in range(29)] + ["x29=2"], "seed0")  # differs past the cut
    for name in (long_a, long_b):
        assert len(name) == len("bursty-small-") + MAX_DIGEST + len("-seed0")
    assert long_a != long_b and long_a[:-len("hxxxxxx-seed0")] == long_b[:-len("hxxxxxx-seed0")]
    assert run_name("digits-cpu", ["mnist_dir=/data/mnist dir"], "seed0") == "digits-cpu-mnist_dir=_data_mnist_dir-seed0"
    assert run_name("modular-cpu", [], "seed0") == "modular-cpu-seed0"


def test_rfm_and_experiment_names_carry_their_changed_options():
    parse = build_parser().parse_args
    assert rfm.default_out(parse(["rfm"])) == "runs/rfm-add-p61-seed0"
    assert rfm.default_out(parse(["rfm", "--train-frac", "0.3", "--iters", "10"])) == "runs/rfm-add-p61-frac=0.3-iters=10-seed0"
    assert rfm.default_out(parse(["rfm", "--train-fracs", "0.2,0.4"])) == "runs/rfm-add-p61-fracs=0.2,0.4-seed0"
    assert experiment.default_out(parse(["experiment", "reddy-phases", "--seeds", "0,1"])) == "runs/reddy-phases"
    assert (experiment.default_out(parse(["experiment", "singh-clamps", "--preset", "pairs/cpu", "--steps", "500"]))
            == "runs/singh-clamps-preset=pairs_cpu-steps=500")


@pytest.mark.parametrize("argv", [["train", "modular", "--set", "op"], ["experiment", "reddy-phases", "--set", "=3"]])
def test_a_bad_set_item_is_still_refused_by_name(argv, tmp_path, monkeypatch, capsys):
    from icl_lab.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "--set expects key=value" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
