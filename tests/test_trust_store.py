"""The run store under races and damage: one writer per lock, --overwrite removes only what the
lab wrote, and a run whose rows, folders or checksums are damaged is refused in one line
before a byte of it changes."""

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import interrupt_training_at, tree_digest

from icl_lab import train
from icl_lab.posthoc import measure_run
from icl_lab.store import (
    RunError,
    RunLock,
    RunLocked,
    intact_state_steps,
    load_run,
    paths,
    read_status,
)

LOCK_ROUNDS = int(os.environ.get("ICL_LAB_LOCK_ROUNDS", "500"))  # about 2 s here; set more for a longer check
CLAIMANTS = 8


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def stopped_run(tmp_path, short_config, monkeypatch):
    """A run interrupted (Ctrl-C) after the checkpoints at steps 0, 5 and 10 (evaluations at 0, 4, 8)."""
    with monkeypatch.context() as m:
        interrupt_training_at(m, 11)
        with pytest.raises(KeyboardInterrupt):
            train(short_config, tmp_path / "run", progress=False)
    assert read_status(tmp_path / "run")["state"] == "stopped"
    return tmp_path / "run"


def refused_in_one_line(attempt, run: Path, *names: str, error=RunError) -> str:
    """Run `attempt`, which must raise `error` in one line naming each of `names`, and change no byte of `run`."""
    before = tree_digest(run)
    with pytest.raises(error) as refusal:
        attempt()
    message = str(refusal.value)
    assert "\n" not in message and all(name in message for name in names), message
    assert tree_digest(run) == before
    return message


# -- 1. one writer under races ---------------------------------------------------------------
def _claimant(run_dir: str, rounds: int, barrier, results) -> None:
    """Each round: claim the run at the same moment as the others, report, hold until all have."""
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the winner's notice, each round
        _claim_each_round(run_dir, rounds, barrier, results)


def _claim_each_round(run_dir: str, rounds: int, barrier, results) -> None:
    for _ in range(rounds):
        barrier.wait()
        lock, error = RunLock(run_dir, "claim"), ""
        try:
            lock.acquire()
        except RunLocked:
            pass
        except Exception as err:  # noqa: BLE001 - a crash is a failure of the lock: reported
            error = f"{type(err).__name__}: {err}"
        results.put((lock.held, error))
        barrier.wait()  # everyone has claimed while the winner still holds it
        lock.release()
        barrier.wait()


def claim_rounds(run: Path, stale: list[str], rounds: int) -> tuple[list[int], list[str], int]:
    """(holders in each round, errors, rounds after which a `.lock` was left) when CLAIMANTS
    processes claim `run` at once, its `.lock` set to stale[round % len(stale)] before each round."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(CLAIMANTS + 1), context.Queue()
    workers = [context.Process(target=_claimant, args=(str(run), rounds, barrier, results)) for _ in range(CLAIMANTS)]
    for w in workers:
        w.start()
    holders, errors, left = [], [], 0
    try:
        for round_ in range(rounds):
            paths(run).lock.write_text(stale[round_ % len(stale)])
            barrier.wait(timeout=60)
            outcomes = [results.get(timeout=60) for _ in range(CLAIMANTS)]
            holders.append(sum(held for held, _ in outcomes))
            errors += [e for _, e in outcomes if e]
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
            left += paths(run).lock.exists()  # its holder removes it on release
    except BaseException:
        barrier.abort()  # a round that went wrong must not leave the claimants waiting
        raise
    finally:
        for w in workers:
            w.join(timeout=60)
    return holders, errors, left


def test_exactly_one_of_many_claimants_takes_over_a_stale_lock(tmp_path):
    pid, host = dead_pid(), os.uname().nodename
    stale = [  # a dead writer of an older icl-lab, an unreadable record, a dead flock writer
        json.dumps({"pid": pid, "host": host, "verb": "train", "started": "then"}),
        "garbage",
        json.dumps({"pid": pid, "host": host, "verb": "train", "started": "then", "flock": True}),
    ]
    started = time.perf_counter()
    holders, errors, left = claim_rounds(tmp_path, stale, LOCK_ROUNDS)
    print(f"{CLAIMANTS} claimants, {LOCK_ROUNDS} rounds, {time.perf_counter() - started:.1f} s, "
          f"rounds by holders: { {n: holders.count(n) for n in sorted(set(holders))} }")
    assert errors == [] and left == 0
    assert holders == [1] * LOCK_ROUNDS


def lock_record(**fields) -> str:
    record = {"pid": 12345, "host": os.uname().nodename, "verb": "train", "started": "then"}
    return json.dumps({**record, **fields})


@pytest.mark.parametrize("content", [
    "garbage", "", "[]", "{}", lock_record(pid=0), lock_record(pid=1), lock_record(pid=-1),
    lock_record(pid=10**30), lock_record(pid=True), lock_record(pid="123"),
], ids=["garbage", "empty", "list", "no-keys", "pid-0", "pid-1", "pid-minus-1", "huge-pid", "pid-true", "pid-string"])
def test_odd_lock_contents_read_as_stale_and_are_taken_over_naming_the_file(tmp_path, content, capsys):
    lock = paths(tmp_path).lock
    lock.write_text(content)
    assert not RunLock.holder(tmp_path).alive()
    with RunLock(tmp_path, "measure"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    if content:
        assert str(lock) in capsys.readouterr().err  # the notice names the file
    assert not lock.exists()


@pytest.mark.parametrize("flock_mark", [False, True])
def test_another_hosts_lock_is_refused_naming_the_lock_file_and_the_host(tmp_path, flock_mark):
    lock = paths(tmp_path).lock
    lock.write_text(lock_record(host="cluster-node-7", **({"flock": True} if flock_mark else {})))
    assert RunLock.holder(tmp_path).state == "other host"
    refused_in_one_line(lambda: RunLock(tmp_path, "measure").acquire(), tmp_path, str(lock), "cluster-node-7", error=RunLocked)


def test_a_live_writer_holds_its_run_whatever_its_record_says(tmp_path):
    """The kernel's lock decides: a garbled record of a live holder does not free the run."""
    with RunLock(tmp_path, "train"):
        paths(tmp_path).lock.write_text("garbage")
        assert RunLock.holder(tmp_path).alive()
        with pytest.raises(RunLocked, match=r"record in .*\.lock is unreadable"):
            RunLock(tmp_path, "measure").acquire()


# -- 2. --overwrite removes only what the lab wrote --------------------------------------------
def test_overwrite_refuses_a_folder_that_only_looks_like_a_run(tmp_path, short_config):
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "config.json").write_text('{"task": "my own project"}')
    (mine / "status.json").write_text('{"state": "done"}')
    (mine / "checkpoints" / "thesis_final.pt").write_bytes(b"three years")
    refused_in_one_line(lambda: train(short_config, mine, progress=False, overwrite=True), mine, "--overwrite refused")


def test_overwrite_refuses_a_run_holding_files_at_any_depth_and_replaces_a_plain_one(done_run, short_config):
    (done_run / "checkpoints" / "my_notes.txt").write_text("lr 1e-3 looked better")
    (done_run / "ablations").mkdir()
    (done_run / "ablations" / "hand_made.csv").write_text("head,score\n")
    overwrite = lambda: train(short_config, done_run, progress=False, overwrite=True)
    refused_in_one_line(overwrite, done_run, "checkpoints/my_notes.txt", "ablations/hand_made.csv")
    (done_run / "checkpoints" / "my_notes.txt").unlink()
    (done_run / "ablations" / "hand_made.csv").unlink()
    metrics = paths(done_run).metrics
    metrics.write_bytes(metrics.read_bytes() + b" ")  # a file of the lab's, changed by someone
    refused_in_one_line(overwrite, done_run, "metrics.parquet (changed since icl-lab wrote it)")
    metrics.write_bytes(metrics.read_bytes()[:-1])
    overwrite()  # what the lab wrote (and the empty ablations/ folder) is replaced
    assert read_status(done_run)["state"] == "done" and not (done_run / "ablations").exists()
    listed = json.loads(paths(done_run).manifest.read_text())["files"]
    files = {k: v for k, v in tree_digest(done_run).items() if v != "dir" and k != "manifest.json"}
    assert {k: (v["sha256"], v["size"]) for k, v in listed.items()} == {
        k: (sha, (done_run / k).stat().st_size) for k, sha in files.items()}


def test_a_run_from_before_manifests_is_replaced_only_when_every_file_fits_the_layout(done_run, short_config):
    paths(done_run).manifest.unlink()
    (done_run / "ablations").mkdir()
    (done_run / "ablations" / "hand_made.csv").write_text("head,score\n")
    overwrite = lambda: train(short_config, done_run, progress=False, overwrite=True)
    refused_in_one_line(overwrite, done_run, "ablations/hand_made.csv")
    (done_run / "ablations" / "hand_made.csv").unlink()
    overwrite()
    assert read_status(done_run)["state"] == "done" and paths(done_run).manifest.exists()


# -- 3-5. damage is refused before anything is written ------------------------------------------
def test_a_run_whose_metrics_were_deleted_is_refused_not_finished_short(stopped_run, short_config):
    paths(stopped_run).metrics.unlink()
    resume = lambda: train(short_config, stopped_run, progress=False, resume=True)
    refused_in_one_line(resume, stopped_run, "metrics.parquet is missing", "step_10.state.json")
    refused_in_one_line(lambda: measure_run(stopped_run, ["icl_accuracy"], [5], progress=False), stopped_run, "metrics.parquet")


def test_a_metrics_file_that_is_a_symlink_loop_is_refused(stopped_run, short_config):
    paths(stopped_run).metrics.unlink()
    os.symlink("metrics.parquet", paths(stopped_run).metrics)
    resume = lambda: train(short_config, stopped_run, progress=False, resume=True)
    refused_in_one_line(resume, stopped_run, "metrics.parquet: a symlink that leads nowhere")
    refused_in_one_line(lambda: load_run(stopped_run), stopped_run, "metrics.parquet")


@pytest.mark.parametrize("folder", ["checkpoints", "ablations"])
def test_a_file_where_a_folder_should_be_is_refused_before_any_write(stopped_run, short_config, folder):
    target = stopped_run / folder
    if target.exists():
        shutil.rmtree(target)
    target.write_text("not a folder")
    resume = lambda: train(short_config, stopped_run, progress=False, resume=True)
    refused_in_one_line(resume, stopped_run, f"{target}: a file where the run's {folder}/ folder should be")


@pytest.mark.parametrize("sums", [[], "abc", {"weights": 1, "state": None}])
def test_a_state_record_with_malformed_checksums_is_named(stopped_run, short_config, sums, capsys):
    with_state = intact_state_steps(stopped_run)[0]
    assert with_state == [5, 10]  # the two newest keep their training state (KEEP_STATES)
    for step in with_state:
        record = paths(stopped_run).state_record(step)
        record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": sums}))
    good, skipped = intact_state_steps(stopped_run)
    assert good == [] and all("state.json is unreadable (its sha256 entry" in line for line in skipped)
    resume = lambda: train(short_config, stopped_run, progress=False, resume=True)
    refused_in_one_line(resume, stopped_run, "step_10.state.json is unreadable", "no intact checkpoint")
