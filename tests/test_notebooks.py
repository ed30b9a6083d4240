"""The notebooks in notebooks/ run top to bottom (CI runs them small: ICL_LAB_NOTEBOOK_STEPS),
and none is committed with outputs."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CI_STEPS = "20"  # each notebook's parameter cell reads it; the full length is for people


def test_the_notebooks_are_there():
    assert [path.name for path in NOTEBOOKS] == ["phase_diagram.ipynb", "quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebooks_hold_no_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    with_outputs = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"])]
    assert not with_outputs, f"{path.name}: cells {with_outputs} hold outputs; clear them before committing (Kernel > Restart & Clear Output)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("ICL_LAB_NOTEBOOK_STEPS", CI_STEPS)
    monkeypatch.setenv("ICL_LAB_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not [o for o in cell.outputs if o.output_type == "error"] for cell in outputs)
    last = outputs[-1].outputs
    assert any("application/vnd.vegalite.v5+json" in o.get("data", {}) or "application/vnd.vegalite.v6+json" in o.get("data", {})
               or "text/html" in o.get("data", {}) for o in last), "the last cell draws no chart"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir())
