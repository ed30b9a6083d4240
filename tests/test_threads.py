"""`--threads`: torch's CPU threads per run, checked at the boundary and recorded in the run."""

import pytest
import torch

from icl_lab import load_run
from icl_lab.cli import main
from icl_lab.cli.arguments import usable_cores

TINY = ["--device", "cpu", "--no-progress", "--set", "task.num_classes=64", "--set", "task.num_labels=8",
        "--set", "eval_size=32", "--set", "model.d_model=16", "--set", "train.batch_size=8", "--set", "train.eval_every=2"]


def refusal(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("verb", [["train", "bursty"], ["resume", "runs/none"], ["experiment", "reddy-phases"],
                                  ["sweep", "none.toml", "--out", "nowhere"]])
@pytest.mark.parametrize("value, words", [
    ("0", ["0 must be an integer in 1.."]),
    ("-2", ["-2 must be an integer in 1.."]),
    ("two", ["'two' is not an integer"]),
    ("1.5", ["'1.5' is not an integer"]),
    ("cores+1", ["must be an integer in 1..", "the cores this process may use"]),
])
def test_bad_thread_counts_are_refused_naming_the_value(verb, value, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value = str(usable_cores() + 1) if value == "cores+1" else value
    code, err = refusal(verb + ["--threads", value], capsys)
    assert code == 2 and "--threads" in err and value in err, err
    for word in words:
        assert word in err, (word, err)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("omp, flag, recorded", [
    (None, [], 2),  # the default for one run: torch's own count (here 2, as set below)
    ("2", [], 2),  # OMP_NUM_THREADS, when set, is the default (torch read it at start-up)
    (None, ["--threads", "2"], 2),
    ("2", ["--threads", "1"], 1),  # the flag wins
])
def test_train_records_its_threads_and_restores_the_callers(omp, flag, recorded, capsys, tmp_path, monkeypatch):
    if recorded > usable_cores():
        pytest.skip(f"needs {recorded} cores")
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    before = torch.get_num_threads()
    torch.set_num_threads(int(omp) if omp else 2)  # what torch would have read from the variable
    try:
        assert main(["train", "bursty", "--steps", "2", "--out", str(tmp_path / "run"), *TINY, *flag]) == 0
        assert torch.get_num_threads() == (int(omp) if omp else 2)  # the caller's count again
    finally:
        torch.set_num_threads(before)
    assert f"{recorded} torch threads" in capsys.readouterr().out
    assert load_run(tmp_path / "run").record["device_description"].endswith(f":{recorded} threads")


@pytest.mark.parametrize("executor", ["local", "batched"])
def test_sweep_threads_reach_each_run(executor, tmp_path, capsys):
    from test_sweep import spec

    path = spec(tmp_path, "[axes]\nseed = [0, 1]\n", steps=2)
    before = torch.get_num_threads()
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--executor", executor, "--threads", "1", "--no-progress"]) == 0
    assert torch.get_num_threads() == before
    for seed in (0, 1):
        config = load_run(tmp_path / "out" / "runs" / f"seed={seed}").record
        assert config["device_description"].endswith(":1 threads"), config["device_description"]


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_where_runs_start_unless_the_user_chose(given, expected):
    """Spinning OpenMP threads take the cores from every other process (benchmarks/threads.py):
    the command line (where runs start, and whose sweep workers inherit it) makes them wait
    passively and keeps a user's choice; importing icl_lab alone changes nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = ("import icl_lab, os; imported = os.environ.get('OMP_WAIT_POLICY', '-'); from icl_lab.cli import main; "
            "main(['presets']); print(imported, os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == [given or "-", expected]  # untouched by the import; set by main
