"""The README's commands and Python examples are the ones CI and users run."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_install_and_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = 'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q'
    assert test_cmd in README
    for part in test_cmd.split(" && "):
        assert part in ci, part


def test_api_examples_are_at_most_ten_lines():
    blocks = python_blocks()
    first, clamp = blocks[0], next(b for b in blocks if "Intervention(" in b)
    for block in (first, clamp):
        assert len([line for line in block.splitlines() if line.strip()]) <= 10


def test_readme_toml_example_is_a_valid_intervention_file():
    from interventions import interventions_from_toml

    toml_block = re.findall(r"```toml\n(.*?)```", README, flags=re.S)[0]
    (spec,) = interventions_from_toml(toml_block)
    assert spec.target == "induction" and spec.heads == (0,)


def test_readme_names_every_registered_target_and_gradient_mode():
    from interventions import target_names
    from interventions.spec import GRADIENTS

    missing = [name for name in [*target_names(), *GRADIENTS] if f"`{name}`" not in README]
    assert not missing, f"README.md does not name {missing}"


@pytest.mark.slow
def test_readme_api_examples_run_and_show_the_icl_transition(tmp_path, monkeypatch):
    """Runs the README's Python examples verbatim: the reference preset on CPU must show the
    abrupt ICL transition (near the B/N plateau, then >= 0.95)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
    transition = namespace["result"].summary["transitions"]["icl_accuracy"]
    assert transition["transition_step"] is not None
    assert transition["y_lo"] <= 0.55 and transition["y_hi"] >= 0.95
    assert transition["width"] <= 1000
    curve = namespace["run"].curve("icl_accuracy")["value"].to_list()
    assert max(curve) >= 0.95 and curve[0] < 0.1
    assert tuple(namespace["cache"]["blocks.1.attn.hook_pattern"].shape)[1:] == (2, 17, 17)
    # the clamped run: the ideal induction pattern removes the plateau, the jump comes earlier
    clamped = namespace["clamped"].summary
    assert clamped["transitions"]["icl_accuracy"]["transition_step"] < transition["transition_step"]
    assert all(calls["train"] == 3000 for calls in clamped["intervention_calls"].values())
    # the stored clamped run at its newest checkpoint: the clamp holds the query on its label
    m = namespace["m"]
    query_row = namespace["clamped_cache"]["blocks.1.attn.hook_pattern"][:, 0, -1]  # [batch, key]
    ideal, _ = m.task.ideal_attention("induction", m.task.eval_sets()["icl"])  # [batch, query, key]
    assert m.step == 3000 and torch.allclose(query_row, ideal[:, -1].to(query_row.dtype), atol=1e-5)
