"""Sweeps: expansion and refusals, fault isolation, locks, kill-and-resume, Ctrl-C, workers
that die with the sweep, Ray = local."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from icl_lab.config import ConfigError
from icl_lab.store import intact_state_steps, load_run, paths, read_status, read_summary
from icl_lab.sweep import load_sweep, run_sweep, sweep_outcome

ROOT = Path(__file__).resolve().parent.parent
TINY = '''
[sweep]
task = "bursty"
preset = "small"
set = { "task.num_classes" = 64, "task.num_labels" = 8, "task.eval_size" = 32, "model.d_model" = 16, "train.batch_size" = 8, "train.steps" = STEPS, "train.eval_every" = EVAL, "train.checkpoint_every" = EVERY, "device" = "cpu" }
'''


def spec(tmp_path, body, steps=8, name="s.toml", checkpoint_every=0, eval_every=4):
    path = tmp_path / name
    path.write_text(TINY.replace("STEPS", str(steps)).replace("EVERY", str(checkpoint_every)).replace("EVAL", str(eval_every)) + body)
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
    path = spec(tmp_path, '[axes]\n"train.lr" = [0.003, 1e30]\nseed = [0, 1]\n')  # lr 1e30 diverges
    table = run_sweep(path, tmp_path / "out", progress=False, threads=1)
    status = dict(zip(table["run"], table["status"]))
    assert status == {"lr=0.003-seed=0": "done", "lr=0.003-seed=1": "done",
                      "lr=1e+30-seed=0": "failed", "lr=1e+30-seed=1": "failed"}
    errors = table.filter(pl.col("status") == "failed")["error"]
    assert all("non-finite" in e for e in errors)
    assert "final.icl_accuracy" in table.columns and "transition.icl_accuracy" in table.columns
    assert sweep_outcome(table) == (1, f"2 done, 2 failed: lr=1e+30-seed=0: {errors[0]}; lr=1e+30-seed=1: {errors[1]}")
    done_metrics = paths(tmp_path / "out" / "runs" / "lr=0.003-seed=0").metrics
    done_mtime = done_metrics.stat().st_mtime_ns
    again = run_sweep(path, tmp_path / "out", progress=False, retry_failed=True, threads=1)  # failed again, done untouched
    assert done_metrics.stat().st_mtime_ns == done_mtime
    assert sweep_outcome(again)[0] == 1 and dict(zip(again["run"], again["status"])) == status


@pytest.mark.slow
def test_sigkill_and_resume_ends_with_exactly_the_grid(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3, 4, 5]\n", steps=120)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "icl_lab.cli", "sweep", str(path), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once at least one run is done and another is under way
        states = list(member_states(out).values())
        if "done" in states and "running" in states:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the sweep never had one run done and one running")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = member_states(out)
    assert "running" in before.values()  # really killed mid-run
    finished = {n for n, s in before.items() if s == "done"}
    mtimes = {n: paths(out / "runs" / n).metrics.stat().st_mtime_ns for n in finished}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs, _ = load_sweep(path)
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(r.name for r in runs)
    table = pl.read_parquet(out / "sweep.parquet")
    assert table.height == 6 and set(table["status"]) == {"done"} and table["run"].n_unique() == 6
    for name, mtime in mtimes.items():  # finished runs were not redone
        assert paths(out / "runs" / name).metrics.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_ray_and_local_executors_give_the_same_table(tmp_path):
    ray = pytest.importorskip("ray")
    path = spec(tmp_path, "[axes]\nseed = [0, 1]\n\"train.lr\" = [0.003, 0.01]\n")
    local = run_sweep(path, tmp_path / "local", executor="local", workers=2, progress=False, threads=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_sweep(path, tmp_path / "ray", executor="ray", workers=2, progress=False, threads=1)
        grouped = run_sweep(path, tmp_path / "grouped", executor="ray", group_size=2, workers=2, progress=False, threads=1)
    finally:
        ray.shutdown()
    drop = [c for c in local.columns if "wall" in c]
    assert local.drop(drop).equals(remote.drop(drop))
    assert local.height == 4 and set(local["status"]) == {"done"}
    for run in local["run"]:
        assert paths(tmp_path / "local" / "runs" / run).metrics.read_bytes() == paths(tmp_path / "ray" / "runs" / run).metrics.read_bytes()
    # groups of 2 as Ray tasks: the same runs up to the batched tolerance (tests/test_batched.py)
    from test_batched import ATOL, RTOL

    assert grouped["run"].equals(local["run"]) and set(grouped["status"]) == {"done"}
    groups = [read_summary(tmp_path / "grouped" / "runs" / run)["group"] for run in local["run"]]
    assert sorted(g["size"] for g in groups) == [2, 2, 2, 2] and len({tuple(g["members"]) for g in groups}) == 2
    for run in local["run"]:
        ours, theirs = load_run(tmp_path / "grouped" / "runs" / run).metrics, load_run(tmp_path / "local" / "runs" / run).metrics
        assert ours.select("step", "metric").equals(theirs.select("step", "metric"))
        np.testing.assert_allclose(ours["value"].to_numpy(), theirs["value"].to_numpy(), rtol=RTOL, atol=ATOL, err_msg=run)


def _default_sigint():
    # as a terminal's foreground job: under `nohup ... &` the test runner itself (and so any
    # child) ignores SIGINT, and the sweep rightly keeps an inherited SIG_IGN
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_sweep(path, out, workers=1, **popen):
    """`icl-lab sweep` in its own session (so a test can signal or kill it and all it started),
    with Ctrl-C's default action whatever the test runner inherited."""
    cmd = [sys.executable, "-m", "icl_lab.cli", "sweep", str(path), "--out", str(out), "--no-progress", "--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, start_new_session=True, env=env, preexec_fn=_default_sigint, **popen)


def member_states(out):
    runs = out / "runs"
    return {p.name: read_status(p)["state"] for p in runs.iterdir()} if runs.is_dir() else {}


def wait_for(condition, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def children_of(pid):
    """Pids of live processes whose parent is `pid`, read from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def is_gone(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_outcome_line_and_exit_code():
    table = pl.DataFrame({"run": ["a", "b", "c", "d"], "status": ["done", "failed", "done", "done"],
                          "error": ["", "Traceback...\nValueError: bad", "", ""]})
    table = table.with_columns(pl.col("error").str.split("\n").list.last())
    assert sweep_outcome(table) == (1, "3 done, 1 failed: b: ValueError: bad")
    assert sweep_outcome(table.filter(pl.col("status") == "done")) == (0, "3 done")
    locked = pl.DataFrame({"run": ["a", "b"], "status": ["locked", "done"], "error": ["being written by x", ""]})
    assert sweep_outcome(locked) == (1, "1 done, 1 locked: a: being written by x")


def test_interventions_are_checked_against_each_members_model_before_any_run(tmp_path):
    body = '''
[axes]
"model.n_heads" = [2, 1]
condition = ["second_head"]
[[conditions.second_head.intervention]]
hook = "blocks.1.attn.hook_pattern"
heads = [1]
query_positions = "query"
target = "induction"
'''
    path = spec(tmp_path, body)
    line = path.read_text().splitlines().index("[[conditions.second_head.intervention]]") + 1
    with pytest.raises(ConfigError) as err:
        run_sweep(path, tmp_path / "out", progress=False)
    message = str(err.value)
    assert f"line {line}" in message and "n_heads=1-condition=second_head" in message
    assert "n_heads=2" not in message  # the two-head member fits
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_member_written_by_a_live_process_is_reported_not_overwritten(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1]\n")
    runs, _ = load_sweep(path)
    busy = tmp_path / "out" / "runs" / runs[1].name
    (tmp_path / "record.json").write_text(json.dumps(runs[1].config))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time; from icl_lab.store import RunWriter\n"
        f"w = RunWriter.create({str(busy)!r}, json.load(open({str(tmp_path / 'record.json')!r})), verb='train')\n"
        "print('locked', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: p.read_bytes() for p in busy.iterdir() if p.is_file()}
        table = run_sweep(path, tmp_path / "out", progress=False, threads=1)
        status = dict(zip(table["run"], table["status"]))
        assert status == {runs[0].name: "done", runs[1].name: "locked"}
        code, line = sweep_outcome(table)
        assert code == 1 and f"pid {holder.pid}" in line and runs[1].name in line
        assert {p.name: p.read_bytes() for p in busy.iterdir() if p.is_file()} == before
        assert read_status(busy)["state"] == "running"
    finally:
        holder.kill()
        holder.wait()


def test_member_that_fails_before_its_run_starts_is_recorded_through_the_store(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1, 2]\n")
    runs, _ = load_sweep(path)
    cluttered = tmp_path / "out" / "runs" / runs[1].name
    cluttered.mkdir(parents=True)
    (cluttered / "notes.txt").write_text("mine")
    unstarted = paths(tmp_path / "out" / "runs" / runs[2].name)  # Ctrl-C while it was being created
    unstarted.checkpoints.mkdir(parents=True)
    unstarted.config.write_text(json.dumps(runs[2].config))
    table = run_sweep(path, tmp_path / "out", progress=False, threads=1)
    assert dict(zip(table["run"], table["status"])) == {runs[0].name: "done", runs[1].name: "failed", runs[2].name: "done"}
    assert "notes.txt" in table["error"][1]
    assert (cluttered / "notes.txt").read_text() == "mine"  # nothing of the user's removed
    status = read_status(cluttered)
    assert status["state"] == "failed" and "RunError" in status["error"]


@pytest.mark.slow
def test_kill_9_of_the_sweep_takes_its_workers_with_it(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3, 4, 5]\n", steps=400)
    out = tmp_path / "out"
    proc = cli_sweep(path, out, workers=2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(member_states(out).values()).count("running") == 2, "two runs under way")
        workers = [pid for pid in children_of(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and not all(is_gone(pid) for pid in workers):
            time.sleep(0.1)
        assert [pid for pid in workers if not is_gone(pid)] == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of ours is left (the group is this sweep's)
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers, target", [(1, "process"), (2, "process"), (2, "process group")])
def test_ctrl_c_stops_the_sweep_and_a_rerun_resumes_exactly(tmp_path, workers, target):
    # long enough that Ctrl-C lands inside a run even when the machine is busy
    # evaluated every 20 steps: the exactness check below compares every evaluation all the same
    path = spec(tmp_path, f"[axes]\nseed = {list(range(workers + 1))}\n", steps=400, checkpoint_every=10, eval_every=20)
    out = tmp_path / "out"

    def interruptible():  # a member under way with a checkpoint after step 0
        return [n for n, s in member_states(out).items() if s == "running" and intact_state_steps(out / "runs" / n)[0][-1:] > [0]]

    proc = cli_sweep(path, out, workers=workers, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(interruptible, "a run with a checkpoint")
        if target == "process":
            os.kill(proc.pid, signal.SIGINT)
        else:  # Ctrl-C in a terminal reaches the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "sweep stopped by Ctrl-C" in err and "again" in err
    states = member_states(out)
    # a member caught while its run was being created has no status yet: it is still pending
    assert "stopped" in states.values() and set(states.values()) <= {"done", "stopped", "unknown"}, states
    if workers == 1:  # the sweep stopped: nothing after the interrupted run started
        assert list(states.values()).count("stopped") == 1 and len(states) < 2
    table = pl.read_parquet(out / "sweep.parquet")
    started = {n: s for n, s in states.items() if s != "unknown"}
    assert dict(zip(table["run"], table["status"])) == {**{n: "pending" for n in table["run"]}, **started}
    # a member stopped before its first checkpoint starts again from step 0 (exact too); the one
    # waited for above had a checkpoint after step 0
    stopped_at = {n: steps[-1] for n, s in states.items() if s == "stopped" and (steps := intact_state_steps(out / "runs" / n)[0])}
    assert any(step > 0 for step in stopped_at.values()), stopped_at
    kept = {n: paths(out / "runs" / n).weights(step) for n, step in stopped_at.items()}
    kept = {n: (f.stat().st_mtime_ns, f.read_bytes()) for n, f in kept.items()}
    rerun = cli_sweep(path, out, workers=workers, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert set(member_states(out).values()) == {"done"}
    for name, step in stopped_at.items():  # resumed from that checkpoint, not started afresh
        weights = paths(out / "runs" / name).weights(step)
        assert (weights.stat().st_mtime_ns, weights.read_bytes()) == kept[name]
    reference = run_sweep(path, tmp_path / "reference", progress=False, threads=1)
    for name in reference["run"]:
        got = load_run(out / "runs" / name).metrics
        assert got.equals(load_run(tmp_path / "reference" / "runs" / name).metrics), name


def test_rerun_with_another_spec_is_refused_naming_what_differs(tmp_path, capsys):
    """Same --out, train.steps 8 -> 12: refused in one line naming the run and the key, with the
    stored spec and runs untouched (it used to exit 0, "2 done", and overwrite sweep.toml)."""
    from icl_lab.cli import main

    out = tmp_path / "out"
    first = spec(tmp_path, "[axes]\nseed = [0, 1]\n", steps=8)
    run_sweep(first, out, progress=False, threads=1)
    stored = (out / "sweep.toml").read_bytes()
    mtimes = {p.name: paths(p).metrics.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    longer = spec(tmp_path, "[axes]\nseed = [0, 1]\n", steps=12, name="longer.toml")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(longer), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("icl-lab sweep: error: ") and "train.steps (stored 8, wanted 12)" in err[0]
    assert "seed=0" in err[0] and "1 other run(s)" in err[0]
    with pytest.raises(ConfigError, match="train.steps"):
        run_sweep(longer, out, progress=False, threads=1)
    assert (out / "sweep.toml").read_bytes() == stored
    assert {p.name: paths(p).metrics.stat().st_mtime_ns for p in (out / "runs").iterdir()} == mtimes
    # a grid that only grows keeps its finished members and trains the new one
    wider = spec(tmp_path, "[axes]\nseed = [0, 1, 2]\n", steps=8, name="wider.toml")
    table = run_sweep(wider, out, progress=False, threads=1)
    assert set(table["status"]) == {"done"} and table.height == 3
    assert {n: paths(out / "runs" / n).metrics.stat().st_mtime_ns for n in mtimes} == mtimes
    assert (out / "sweep.toml").read_text() == wider.read_text()
