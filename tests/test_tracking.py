"""Tracking (icl_lab.tracking, `icl-lab export`, `--log`): one short run of each task (bursty,
pairs, modular, digits, rfm) is trained with its metrics mirrored live to TensorBoard, W&B
(offline) and trackio, then exported to each; both are read back with each library's own
reader (TensorBoard's EventAccumulator, `wandb leet inspect --json` on the .wandb log,
trackio's SQLiteStorage) and compared value by value with metrics.parquet read by polars.
Refusals (unknown backend, missing extra, running, killed or corrupt runs) write nothing,
and no export changes a byte of a run."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from icl_lab.cli import main
from icl_lab.tracking import TrackingError, export_run, export_runs, mirror_metrics, tracking_key
from conftest import interrupt_training_at, tree_digest

pytestmark = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("tensorboard", "wandb", "trackio")),
                                reason="the tracking extras are not installed (pip install -e '.[dev]')")

BACKENDS = ["tensorboard", "wandb", "trackio"]
TASKS = ["bursty", "pairs", "modular", "digits", "rfm"]
SHORT = {"train.steps": 6, "train.eval_every": 3, "train.checkpoint_every": 0, "train.checkpoints_per_decade": 0,
         "device": "cpu"}


def tiny_config(task: str):
    from icl_lab.presets import get_preset

    sizes = {
        "bursty": {"task.num_classes": 64, "task.num_labels": 8, "task.dim": 15, "task.context_pairs": 4,
                   "task.burstiness": 2, "task.eval_size": 64, "model.d_model": 16, "train.batch_size": 16},
        "pairs": {"task.eval_size": 64, "train.batch_size": 16, "model.d_model": 16},
        "modular": {"task.p": 13},
        "digits": {"task.train_size": 100, "train.batch_size": 50},
    }[task]
    preset = {"bursty": "small", "pairs": "cpu", "modular": "cpu", "digits": "cpu"}[task]
    return get_preset(task, preset).config.with_overrides({**SHORT, **sizes})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """task -> (run dir, live-mirror folder): each trained with --log on all three trackers."""
    import torch

    from icl_lab.rfm import RFMConfig, run_rfm
    from icl_lab.train import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tracking")
    out = {}
    with mirror_metrics(BACKENDS, root / "live"):
        for task in TASKS:
            if task == "rfm":
                run_rfm(RFMConfig(p=7, op="add", train_fraction=0.5, iters=3, device="cpu"), root / task, progress=False)
            else:
                train(tiny_config(task), root / task, progress=False)
            out[task] = root / task
    return out, root / "live"


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """Two RFM runs for the refusals, trained without trackers (RFM: a second, no transformer)."""
    import torch

    from icl_lab.rfm import RFMConfig, run_rfm

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("small")
    for name, p in (("rfm", 7), ("rfm-p5", 5)):
        run_rfm(RFMConfig(p=p, op="add", train_fraction=0.5, iters=3, device="cpu"), root / name, progress=False)
    return {"rfm": root / "rfm", "rfm-p5": root / "rfm-p5"}


def stored(run_dir: Path) -> dict[tuple[int, str], float]:
    """metrics.parquet, read directly: (step, metric) -> value."""
    frame = pl.read_parquet(run_dir / "metrics.parquet")
    return {(int(s), m): float(v) for s, m, v in frame.select("step", "metric", "value").iter_rows()}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# -- each library's own reader ------------------------------------------------------------------
def read_tensorboard(folder: Path) -> list[tuple[int, str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return [(e.step, tag, e.value) for tag in accumulator.Tags()["scalars"] for e in accumulator.Scalars(tag)]


def read_wandb(folder: Path, key: str) -> list[tuple[int, str, float]]:
    """The history records of the offline run's .wandb log, as W&B's own inspector prints them."""
    logs = sorted(folder.glob(f"wandb/offline-run-*-{key}/run-{key}.wandb"))  # a resumed run: one per part
    assert logs, f"no offline W&B run {key} in {folder}"
    wandb_cli = Path(sys.executable).with_name("wandb")
    lines = [line for log in logs for line in subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(log)], check=True, capture_output=True, text=True,
        timeout=120).stdout.splitlines()]
    rows = []
    for record in map(json.loads, lines):
        if record.get("type") == "history":
            item = record["history"]["item"]
            rows += [(int(item["step"]), k, float(v)) for k, v in item.items() if not k.startswith("_") and k != "step"]
    return rows


def read_trackio(folder: Path, key: str) -> list[tuple[int, str, float]]:
    from icl_lab.tracking.to_trackio import read_logs

    skip = {"step", "timestamp"}
    return [(int(log["step"]), k, float("nan") if v is None else float(v)) for log in read_logs(folder, key)
            for k, v in log.items() if k not in skip]


def read_back(backend: str, folder: Path, run_dir: Path) -> list[tuple[int, str, float]]:
    key = tracking_key(run_dir)
    if backend == "tensorboard":
        return read_tensorboard(folder / key)
    return read_wandb(folder, key) if backend == "wandb" else read_trackio(folder, key)


def read_all(backend: str, folder: Path, run_dirs: dict[str, Path]) -> dict[str, list[tuple[int, str, float]]]:
    """Each run read back; W&B's inspector (a process per log) runs for all runs at once."""
    from concurrent.futures import ThreadPoolExecutor

    if backend != "wandb":
        return {task: read_back(backend, folder, d) for task, d in run_dirs.items()}
    with ThreadPoolExecutor(len(run_dirs)) as pool:
        futures = {task: pool.submit(read_back, backend, folder, d) for task, d in run_dirs.items()}
    return {task: f.result() for task, f in futures.items()}


def check_values(rows: list[tuple[int, str, float]], run_dir: Path, backend: str) -> None:
    """Every row of metrics.parquet once, with its value (TensorBoard stores float32)."""
    import numpy as np

    expected = stored(run_dir)
    got = {}
    for step, metric, value in rows:
        assert (step, metric) not in got, f"{backend}: ({step}, {metric}) logged twice"
        got[(step, metric)] = value
    assert set(got) == set(expected), f"{backend}: {sorted(set(got) ^ set(expected))[:5]}"
    for cell, value in expected.items():
        want = float(np.float32(value)) if backend == "tensorboard" else value
        assert same(got[cell], want), f"{backend} {cell}: {got[cell]!r} != {want!r}"


# -- tests ----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_reads_back_equal_to_metrics_parquet_for_every_task(runs, backend, tmp_path):
    run_dirs, _ = runs
    before = {task: tree_digest(d) for task, d in run_dirs.items()}
    placed = export_runs(list(run_dirs.values()), backend, tmp_path / backend)
    assert len(placed) == len(TASKS)
    read = read_all(backend, tmp_path / backend, run_dirs)
    for task, run_dir in run_dirs.items():
        assert stored(run_dir), task
        check_values(read[task], run_dir, backend)
        assert tree_digest(run_dir) == before[task], f"export to {backend} changed run {task}"
    assert not list((tmp_path / backend).glob(".export-*")), "the staging folder is left behind"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_live_log_mirrors_the_same_values(runs, backend):
    """--log during training: every row of metrics.parquet (post-run rows of modular included)."""
    run_dirs, live = runs
    read = read_all(backend, live / backend, run_dirs)
    for task, run_dir in run_dirs.items():
        check_values(read[task], run_dir, backend)


def test_unknown_backend_is_refused_naming_the_choices(small_runs, tmp_path, capsys):
    run_dirs = small_runs
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run_dirs["rfm"]), "--to", "mlflow", "--dest", str(tmp_path / "x")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'mlflow'" in err and "tensorboard, wandb, trackio" in err
    assert not (tmp_path / "x").exists()


def test_missing_extra_is_refused_with_the_install_command(small_runs, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    run_dirs = small_runs
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run_dirs["rfm"]), "--to", "wandb", "--dest", str(tmp_path / "x")])
    assert stop.value.code == 2 and 'pip install "icl-lab[wandb]"' in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # --log: refused before the run directory is written
        main(["train", "bursty", "--steps", "2", "--out", str(tmp_path / "run"), "--log", "tensorboard,wandb"])
    assert stop.value.code == 2 and 'pip install "icl-lab[wandb]"' in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "x").exists()


def copy_run(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where / run_dir.name))


@pytest.mark.parametrize("damage", ["running", "killed", "corrupt metrics", "corrupt status"])
def test_running_or_corrupt_run_is_refused_and_nothing_is_exported(small_runs, tmp_path, damage):
    from icl_lab.store import RunLock

    good = copy_run(small_runs["rfm-p5"], tmp_path / "good")
    bad = copy_run(small_runs["rfm"], tmp_path / "bad")
    lock = None
    if damage == "running":
        lock = RunLock(bad, "train").acquire()
    elif damage == "killed":
        (bad / "status.json").write_text(json.dumps({"state": "running", "error": None}))
    elif damage == "corrupt metrics":
        (bad / "metrics.parquet").write_bytes(b"not parquet")
    else:
        (bad / "status.json").write_text("{")
    before = tree_digest(bad)
    try:
        with pytest.raises(TrackingError) as refusal:
            export_runs([good, bad], "tensorboard", tmp_path / "dest")
    finally:
        if lock is not None:
            lock.release()
    words = {"running": "is running", "killed": "no process holds it", "corrupt metrics": "is corrupt",
             "corrupt status": "is corrupt"}[damage]
    assert str(bad) in str(refusal.value) and words in str(refusal.value)
    assert not (tmp_path / "dest").exists(), "a partial export was written"
    if damage != "running":
        assert tree_digest(bad) == before


def test_cli_export_twice_is_refused_and_run_unchanged(small_runs, tmp_path, capsys):
    run_dirs = small_runs
    before = tree_digest(run_dirs["rfm"])
    assert main(["export", str(run_dirs["rfm"]), "--to", "tensorboard", "--dest", str(tmp_path / "tb")]) == 0
    assert (tmp_path / "tb" / tracking_key(run_dirs["rfm"])).is_dir()
    with pytest.raises(SystemExit) as stop:
        main(["export", str(run_dirs["rfm"]), "--to", "tensorboard", "--dest", str(tmp_path / "tb")])
    assert stop.value.code == 2 and "already exported" in capsys.readouterr().err
    assert tree_digest(run_dirs["rfm"]) == before


@pytest.mark.parametrize("backend", ["tensorboard", "trackio"])
def test_replace_exports_rows_added_since(small_runs, tmp_path, backend):
    """Rows added after an export (as `icl-lab measure` adds them) reach the tracker with
    --replace, each once; without it the second export is refused."""
    from icl_lab.store import append_metrics

    run_dir = copy_run(small_runs["rfm"], tmp_path / "copy")
    export_run(run_dir, backend, tmp_path / backend)
    append_metrics(run_dir, [(0, "added_later", 0.25), (2, "added_later", 0.5)])
    with pytest.raises(TrackingError, match="already exported"):
        export_run(run_dir, backend, tmp_path / backend)
    export_run(run_dir, backend, tmp_path / backend, replace=True)
    rows = read_back(backend, tmp_path / backend, run_dir)
    assert (2, "added_later", 0.5) in rows
    check_values(rows, run_dir, backend)


@pytest.mark.slow
def test_resumed_run_mirrors_only_new_steps(tmp_path, monkeypatch):
    """A run stopped mid-way and resumed with --log: each step reaches the tracker once, and
    the values are those of metrics.parquet."""
    from icl_lab.train import train

    config = tiny_config("bursty").with_overrides({"train.steps": 9, "train.checkpoint_every": 4})
    run_dir, live = tmp_path / "run", tmp_path / "live"
    with mirror_metrics(BACKENDS, live):
        # evaluations at 0, 3, 6, 9, checkpoints at 0, 4: stopped in step 8, it resumes from 4
        # and evaluates step 6 again, which the trackers already hold
        interrupt_training_at(monkeypatch, 8)
        with pytest.raises(KeyboardInterrupt):
            train(config, run_dir, progress=False)
        monkeypatch.undo()
        assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
        train(config, run_dir, progress=False, resume=True)
    assert {s for s, _ in stored(run_dir)} == {0, 3, 6, 9}
    for backend in BACKENDS:
        check_values(read_back(backend, live / backend, run_dir), run_dir, backend)


@pytest.mark.slow
def test_a_run_started_again_replaces_its_tracker_copy(tmp_path):
    """--overwrite with --log: the trackers hold the new run's rows only."""
    from icl_lab.rfm import RFMConfig, run_rfm

    run_dir, live = tmp_path / "rfm", tmp_path / "live"
    with mirror_metrics(BACKENDS, live):
        run_rfm(RFMConfig(p=7, op="add", train_fraction=0.5, iters=4, device="cpu"), run_dir, progress=False)
        first = stored(run_dir)
        run_rfm(RFMConfig(p=5, op="add", train_fraction=0.5, iters=2, device="cpu"), run_dir, progress=False, overwrite=True)
    assert stored(run_dir) != first
    for backend in BACKENDS:
        check_values(read_back(backend, live / backend, run_dir), run_dir, backend)
