"""Sweeps: expansion and refusals, fault isolation, kill-and-resume, Ray = local."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from icl_lab.config import ConfigError
from icl_lab.store import read_json
from icl_lab.sweep import load_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent
TINY = '''
[sweep]
task = "bursty"
preset = "small"
set = { "task.num_classes" = 64, "task.num_labels" = 8, "task.eval_size" = 32, "model.d_model" = 16, "train.steps" = STEPS, "train.eval_every" = 4, "train.checkpoint_every" = 0, "device" = "cpu" }
'''


def spec(tmp_path, body, steps=8, name="s.toml"):
    path = tmp_path / name
    path.write_text(TINY.replace("STEPS", str(steps)) + body)
    return path


def test_examples_expand():
    runs, _ = load_sweep(ROOT / "sweeps" / "singh_clamps.toml")
    assert len(runs) == 9 and runs[0].name == "condition=none-seed=0"
    assert runs[-1].config["interventions"][0]["target"] == "induction"
    assert len(load_sweep(ROOT / "sweeps" / "ablation_scan.toml")[0]) == 3


@pytest.mark.parametrize(
    "body, words",
    [
        ("[axes]\nseed == [0]\nx = 1\n", ["not valid TOML", "line 7"]),
        ('[axes]\nseed = [0]\n"task.num_clases" = [1]\n', ["line 8", "task.num_clases", "task.num_classes"]),
        ("[axes]\nsed = [0]\n", ["line 7", "sed"]),
        ('[axes]\ncondition = ["ghost"]\n', ["line 7", "ghost", "[conditions.ghost]"]),
        ("[axis]\nseed = [0]\n", ["line 6", "axis", "axes"]),
        ('[[ablation]]\nkind = "scramble"\n', ["ablation", "scramble", "zero"]),
        ("[axes]\nseed = []\n", ["seed", "non-empty"]),
    ],
)
def test_bad_sweep_files_are_refused_before_any_run(tmp_path, body, words):
    path = spec(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        run_sweep(path, tmp_path / "out", progress=False)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert not (tmp_path / "out").exists()


def test_failing_member_is_recorded_and_the_others_finish_then_retry(tmp_path):
    body = '''
[axes]
condition = ["ok", "broken"]
seed = [0, 1]
[conditions.ok]
[[conditions.broken.intervention]]
hook = "blocks.1.hook_resid_pre"
target = "file"
file = "/nonexistent/target.safetensors"
'''
    path = spec(tmp_path, body)
    table = run_sweep(path, tmp_path / "out", progress=False)
    status = dict(zip(table["run"], table["status"]))
    assert status == {"condition=ok-seed=0": "done", "condition=ok-seed=1": "done",
                      "condition=broken-seed=0": "failed", "condition=broken-seed=1": "failed"}
    assert all("does not exist" in e for e in table.filter(pl.col("status") == "failed")["error"])
    assert "final.icl_accuracy" in table.columns and "transition.icl_accuracy" in table.columns
    done_mtime = (tmp_path / "out" / "runs" / "condition=ok-seed=0" / "metrics.parquet").stat().st_mtime_ns
    run_sweep(path, tmp_path / "out", progress=False, retry_failed=True)  # failed again, done untouched
    assert (tmp_path / "out" / "runs" / "condition=ok-seed=0" / "metrics.parquet").stat().st_mtime_ns == done_mtime


def test_sigkill_and_resume_ends_with_exactly_the_grid(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3, 4, 5]\n", steps=120)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "icl_lab.cli", "sweep", str(path), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once at least one run is done and another is under way
        states = [read_json(p / "status.json", {}).get("state") for p in (out / "runs").glob("*")] if (out / "runs").exists() else []
        if "done" in states and "running" in states:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the sweep never had one run done and one running")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: read_json(p / "status.json", {}).get("state") for p in (out / "runs").glob("*")}
    assert "running" in before.values()  # really killed mid-run
    finished = {n for n, s in before.items() if s == "done"}
    mtimes = {n: (out / "runs" / n / "metrics.parquet").stat().st_mtime_ns for n in finished}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs, _ = load_sweep(path)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r.name for r in runs)
    table = pl.read_parquet(out / "sweep.parquet")
    assert table.height == 6 and set(table["status"]) == {"done"} and table["run"].n_unique() == 6
    for name, mtime in mtimes.items():  # finished runs were not redone
        assert (out / "runs" / name / "metrics.parquet").stat().st_mtime_ns == mtime


def test_ray_and_local_executors_give_the_same_table(tmp_path):
    ray = pytest.importorskip("ray")
    path = spec(tmp_path, "[axes]\nseed = [0, 1]\n\"train.lr\" = [0.003, 0.01]\n")
    local = run_sweep(path, tmp_path / "local", executor="local", workers=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(path, tmp_path / "ray", executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    drop = [c for c in local.columns if "wall" in c]
    assert local.drop(drop).equals(remote.drop(drop))
    assert local.height == 4 and set(local["status"]) == {"done"}
    for run in local["run"]:
        assert (tmp_path / "local" / "runs" / run / "metrics.parquet").read_bytes() == (tmp_path / "ray" / "runs" / run / "metrics.parquet").read_bytes()
