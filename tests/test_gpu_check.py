"""benchmarks/gpu_check.sh: the script a person with a GPU runs works, checked here on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from icl_lab import load_run

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run_script(env_extra: dict, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_script_parses_and_is_strict():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert "set -euo pipefail" in SCRIPT.read_text()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_and_exits_1(tmp_path):
    done = run_script({"GPU_CHECK_OUT": str(tmp_path)}, timeout=120)
    assert done.returncode == 1
    assert "no CUDA device" in done.stderr and "GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1" in done.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any command ran


@pytest.mark.slow
def test_every_command_runs_on_cpu_in_quick_mode(tmp_path):
    """The dry run (about 25 s on a quiet machine with one thread): each command of the GPU
    check, a few steps each, on CPU, and the one table."""
    done = run_script({"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_QUICK": "1", "GPU_CHECK_OUT": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.split("check ", 1)[1]
    for row in ("CUDA tests (tests/test_cuda.py)    ok:", "one run, bursty/small", "group of M = 1 ", "group of M = 2 ",
                "trainer vs plain PyTorch", "plain PyTorch, eager", "icl_lab train_step, lean forward", "modular/nanda, --steps 20"):
        assert row in table, (row, table)
    assert "steps/s" in table and "target >= 0.9" in table
    for log in ("tests", "batched", "trainer", "nanda"):
        assert (tmp_path / f"{log}.log").stat().st_size > 0
    nanda = load_run(tmp_path / "nanda")
    assert nanda.status["state"] == "done" and nanda.config.preset == "nanda" and nanda.config.train.steps == 20
