"""The experiments' grids on tiny settings: every condition or cell runs, finished runs are kept,
and a grid trained as batched groups gives the table of the same grid trained run by run."""

import dataclasses

import polars as pl
import pytest

from icl_lab import load_run
from icl_lab.store import intact_state_steps, paths, read_status, read_summary
from icl_lab.config import ConfigError
from icl_lab.experiments import reddy
from icl_lab.experiments.singh import CONDITIONS, run_experiment

TINY = {
    "task.num_classes": 64, "task.num_labels": 8, "task.eval_size": 32,
    "model.d_model": 16, "train.eval_every": 4, "train.checkpoint_every": 0, "device": "cpu",
}


@pytest.mark.slow
def test_singh_experiment_runs_every_condition_and_resumes(tmp_path):
    table = run_experiment(tmp_path, seeds=[0, 1], steps=8, progress=False, overrides=TINY, preset="bursty/small")
    assert table["condition"].to_list() == list(CONDITIONS)
    assert (tmp_path / "singh_clamps.parquet").exists() and "| induction |" in (tmp_path / "singh_clamps.md").read_text()
    assert (tmp_path / "singh_clamps.png").read_bytes()[:4] == b"\x89PNG" and "B/N" in (tmp_path / "singh_clamps.svg").read_text()
    learned = load_run(tmp_path / "learned_head-seed1")
    spec = learned.config.interventions[0]
    assert spec.target == "checkpoint" and spec.checkpoint_run.endswith("none-seed1")
    assert load_run(tmp_path / "induction-seed0").curve("induction_score.L1H0")["value"].to_list() == [1.0, 1.0, 1.0]
    before = (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns
    again = run_experiment(tmp_path, seeds=[0, 1], steps=8, progress=False, overrides=TINY, preset="bursty/small")
    assert (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns == before  # not redone
    assert again.equals(table)
    assert isinstance(table, pl.DataFrame)


REDDY_GRID = {"task.num_classes": [64, 128], "task.burstiness": [2, 4]}


@pytest.mark.slow
def test_reddy_phases_batched_equals_run_by_run(tmp_path):
    """The same grid trained as one batched group and one run at a time: every run's metrics
    agree to the batched-training tolerance (tests/test_batched.py), so the tables agree."""
    options = dict(seeds=[0, 1], steps=8, progress=False, overrides=TINY, grid=REDDY_GRID)
    batched = reddy.run_experiment(tmp_path / "batched", **options)
    single = reddy.run_experiment(tmp_path / "single", group_size=1, **options)
    assert sorted(zip(batched["K"], batched["B"])) == [(64, 2), (64, 4), (128, 2), (128, 4)]
    assert batched["seeds"].to_list() == [2] * 4
    timing = (tmp_path / "batched" / "reddy_phases.json").read_text()
    assert '"groups": 1' in timing and '"trained": 8' in timing
    assert '"groups": 0' in (tmp_path / "single" / "reddy_phases.json").read_text()
    for k, b, seed in [(64, 2, 0), (128, 4, 1)]:
        name = reddy.cell_name(k, b, seed)
        a, s = load_run(tmp_path / "batched" / name), load_run(tmp_path / "single" / name)
        assert a.config.task_config.num_classes == k and a.config.task_config.burstiness == b and a.config.seed == seed
        wide_a, wide_s = a.metrics.sort("step", "metric"), s.metrics.sort("step", "metric")
        assert wide_a["metric"].to_list() == wide_s["metric"].to_list()
        diff = (wide_a["value"] - wide_s["value"]).abs().max()
        assert diff <= 1e-4, (name, diff)
    for column in ("icl_accuracy_mean", "iwl_accuracy_mean"):
        assert (batched.sort("K", "B")[column] - single.sort("K", "B")[column]).abs().max() <= 1e-4
    assert "final ICL accuracy" in (tmp_path / "batched" / "reddy_phases.md").read_text()
    assert "IWL accuracy" in (tmp_path / "batched" / "reddy_phases.svg").read_text()  # the figure beside the table
    again = reddy.run_experiment(tmp_path / "batched", **options)  # finished runs are kept
    assert '"kept": 8' in (tmp_path / "batched" / "reddy_phases.json").read_text() and again.equals(batched)


def test_reddy_phases_refuses_bad_grids_before_training(tmp_path):
    with pytest.raises(ConfigError, match="task.num_labels.*axes task.num_classes, task.burstiness"):
        reddy.run_experiment(tmp_path, seeds=[0], steps=8, progress=False, overrides=TINY, grid={"task.num_labels": [8]})
    with pytest.raises(ConfigError, match="multiple of task.num_labels"):
        reddy.run_experiment(tmp_path, seeds=[0], steps=8, progress=False, overrides=TINY, grid={"task.num_classes": [100]})
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_llc_stages_measures_every_checkpoint_keeps_its_work_and_draws(tmp_path):
    pytest.importorskip("devinterp")
    from icl_lab.experiments import llc_stages

    tiny_llc = {"llc.num_draws": 6, "llc.num_burnin_steps": 2, "llc.dataset_size": 128, "llc.init_loss_batches": 2}
    options = dict(seeds=[0], steps=20, progress=False, overrides={**TINY, **tiny_llc, "train.checkpoints_per_decade": 3},
                   conditions=["none", "induction"], workers=1, llc_from=1)
    table = llc_stages.run_experiment(tmp_path, **options)
    assert table["condition"].to_list() == ["none", "induction"]
    none, induction = load_run(tmp_path / "none-seed0"), load_run(tmp_path / "induction-seed0")
    checkpoints = [1, 2, 5, 10, 20]  # 3 a decade, and the last step
    assert none.curve("llc")["step"].to_list() == checkpoints
    assert induction.curve("llc_unclamped")["step"].to_list() == checkpoints  # the clamped run, clamps off too
    assert none.curve("llc_unclamped").height == 0
    assert none.curve("llc.L1H0")["step"].to_list() == [] and none.curve("llc.L0H1").height == 0  # heads from step 100 on
    assert "stages" in none.summary and "llc" in none.summary["stages"]
    assert (tmp_path / "llc_stages.png").stat().st_size > 10_000 and (tmp_path / "llc_stages.svg").exists()
    assert "| induction | 0 |" in (tmp_path / "llc_stages.md").read_text()
    before = (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns
    assert llc_stages.run_experiment(tmp_path, **options).equals(table)  # measured once, kept
    assert (tmp_path / "none-seed0" / "metrics.parquet").stat().st_mtime_ns == before


def test_llc_stages_refuses_bad_input_before_training(tmp_path):
    pytest.importorskip("devinterp")
    from icl_lab.experiments import llc_stages

    with pytest.raises(ConfigError, match="unknown condition 'keep_one' for llc-stages on bursty"):
        llc_stages.run_experiment(tmp_path, seeds=[0], conditions=["keep_one"], progress=False)
    with pytest.raises(ConfigError, match="llc.num_chains must be >= 1"):
        llc_stages.run_experiment(tmp_path, seeds=[0], overrides={"llc.num_chains": 0}, progress=False)
    with pytest.raises(ConfigError, match="bursty or pairs preset"):
        llc_stages.run_experiment(tmp_path, seeds=[0], preset="modular/cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


def interrupt_at_evaluation(monkeypatch, measure, n):
    """Ctrl-C (KeyboardInterrupt) inside the n-th call of `measure`."""
    from icl_lab.measures import registry

    original, calls = registry.MEASURES[measure], {"n": 0}

    def interrupted(model, data):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original.fn(model, data)

    monkeypatch.setitem(registry.MEASURES, measure, dataclasses.replace(original, fn=interrupted))


def test_anti_grokking_rerun_after_ctrl_c_resumes_its_stopped_run(tmp_path, monkeypatch, capsys):
    """It used to train with overwrite=True: from step 0 again, its checkpoints deleted."""
    from icl_lab.cli import main
    from icl_lab.experiments import antigrokking

    out = tmp_path / "exp"
    args = ["experiment", "anti-grokking", "--seeds", "0", "--steps", "40", "--out", str(out), "--no-progress",
            "--device", "cpu", "--set", "train.eval_every=10", "--set", "train.checkpoint_every=10"]
    with monkeypatch.context() as m:
        interrupt_at_evaluation(m, "classification_accuracy", 4)  # the evaluation at step 30
        capsys.readouterr()
        assert main(args) == 130  # Ctrl-C: one line saying how to go on, no traceback
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("icl-lab experiment: interrupted (Ctrl-C); rerun `icl-lab experiment anti-grokking")
    run_dir = out / "wd0-seed0"
    status = read_status(run_dir)
    assert status["state"] == "stopped"
    # its advice is the command that continues it (and finishes the table), not `icl-lab resume`
    assert f"icl-lab experiment anti-grokking --out {out} --seeds 0 --steps 40 --device cpu" in status["error"]
    assert "icl-lab resume" not in status["error"]
    steps = intact_state_steps(run_dir)[0]
    assert steps[-1] == 20, steps
    kept = paths(run_dir).weights(10)
    kept = (kept.stat().st_mtime_ns, kept.read_bytes())
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "resuming 1 run(s) from their checkpoints: wd0-seed0 (step 20)" in printed
    assert f"figure: {(out / 'anti_grokking').resolve()}.png and" in printed and (out / "anti_grokking.svg").exists()
    weights = paths(run_dir).weights(10)
    assert (weights.stat().st_mtime_ns, weights.read_bytes()) == kept  # resumed, not started again
    options = dict(seeds=[0], steps=40, weight_decays=(0.0,), progress=False,
                   overrides={"train.eval_every": 10, "train.checkpoint_every": 10, "device": "cpu"})
    antigrokking.run_experiment(tmp_path / "whole", **options)
    assert load_run(run_dir).metrics.equals(load_run(tmp_path / "whole" / "wd0-seed0").metrics)


def test_reddy_rerun_after_ctrl_c_resumes_its_stopped_group_together(tmp_path, monkeypatch, capsys):
    """A group stopped together goes on as that group (it used to resume one run at a time),
    and ends as the group trained without a stop."""
    options = dict(seeds=[0, 1], steps=12, progress=False, overrides={**TINY, "train.checkpoint_every": 4},
                   grid={"task.num_classes": [64], "task.burstiness": [2]})
    with monkeypatch.context() as m:
        interrupt_at_evaluation(m, "icl_accuracy", 5)  # evaluations 0 and 4 of both pass; step 8 is stopped
        with pytest.raises(KeyboardInterrupt):
            reddy.run_experiment(tmp_path / "exp", **options)
    names = [reddy.cell_name(64, 2, seed) for seed in (0, 1)]
    assert [read_status(tmp_path / "exp" / n)["state"] for n in names] == ["stopped", "stopped"]
    stopped_at = {intact_state_steps(tmp_path / "exp" / n)[0][-1] for n in names}
    assert len(stopped_at) == 1 and 0 < min(stopped_at) < 8, stopped_at  # together, mid-way
    capsys.readouterr()
    reddy.run_experiment(tmp_path / "exp", **options)
    assert "resuming 2 run(s) from their checkpoints" in capsys.readouterr().out
    timing = (tmp_path / "exp" / "reddy_phases.json").read_text()
    assert '"resumed": 2' in timing and '"groups": 1' in timing and '"trained": 0' in timing
    for name in names:
        assert read_summary(tmp_path / "exp" / name)["group"] == {"size": 2, "members": names}
    reddy.run_experiment(tmp_path / "whole", **options)
    for name in names:
        assert load_run(tmp_path / "exp" / name).metrics.equals(load_run(tmp_path / "whole" / name).metrics), name


def test_grid_refuses_a_stored_run_with_another_config(tmp_path):
    options = dict(seeds=[0], steps=8, progress=False, overrides=TINY, grid={"task.num_classes": [64], "task.burstiness": [2]})
    reddy.run_experiment(tmp_path, **options)
    before = (tmp_path / reddy.cell_name(64, 2, 0) / "metrics.parquet").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"K64-B2-seed0.*train.steps \(stored 8, wanted 12\)"):
        reddy.run_experiment(tmp_path, **{**options, "steps": 12})
    assert (tmp_path / reddy.cell_name(64, 2, 0) / "metrics.parquet").stat().st_mtime_ns == before


def test_rfm_fractions_refuse_a_stored_run_with_another_config(tmp_path):
    """A finished RFM run used to be kept whatever its config; now it must be the one asked for."""
    from icl_lab.experiments.rfm import run_fractions
    from icl_lab.rfm.machine import RFMConfig

    base = RFMConfig(p=7, iters=2, device="cpu")
    first = run_fractions(tmp_path, [0.5], base, progress=False)
    assert run_fractions(tmp_path, [0.5], base, progress=False).equals(first)  # kept
    with pytest.raises(ConfigError, match=r"frac0.5: its stored config differs in iters \(stored 2, wanted 3\)"):
        run_fractions(tmp_path, [0.5], dataclasses.replace(base, iters=3), progress=False)


@pytest.mark.slow
def test_singh_rerun_after_ctrl_c_ends_as_an_uninterrupted_experiment_with_no_file_deleted(tmp_path, monkeypatch):
    """Ctrl-C mid-grid, then the same command again: every run's metrics, its checkpoints and
    the table end as an uninterrupted experiment's, and no file the first part wrote is gone
    but the training states an uninterrupted run drops too (only the two newest stay)."""
    options = dict(seeds=[0], steps=12, progress=False, conditions=["none", "induction"], preset="bursty/small",
                   overrides={**TINY, "train.checkpoint_every": 4})
    with monkeypatch.context() as m:
        interrupt_at_evaluation(m, "icl_accuracy", 5)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(tmp_path / "exp", **options)
    written = {p.relative_to(tmp_path / "exp") for p in (tmp_path / "exp").rglob("*.safetensors")}
    assert written
    table = run_experiment(tmp_path / "exp", **options)
    whole = run_experiment(tmp_path / "whole", **options)
    assert table.drop("wall_seconds", strict=False).equals(whole.drop("wall_seconds", strict=False))
    for run_dir in sorted(p for p in (tmp_path / "whole").iterdir() if p.is_dir()):
        again = tmp_path / "exp" / run_dir.name
        assert paths(again).metrics.read_bytes() == paths(run_dir).metrics.read_bytes(), run_dir.name
        assert sorted(p.name for p in paths(again).checkpoints.iterdir()) == sorted(p.name for p in paths(run_dir).checkpoints.iterdir())
        for weights in paths(run_dir).checkpoints.glob("step_*.safetensors"):
            assert (paths(again).checkpoints / weights.name).read_bytes() == weights.read_bytes(), (run_dir.name, weights.name)
    kept = {p.relative_to(tmp_path / "exp") for p in (tmp_path / "exp").rglob("*.safetensors")}
    weights = {p for p in written if not p.name.endswith(".state.safetensors")}
    assert weights and weights <= kept
    dropped_states = {p for p in written - kept if p.name.endswith(".state.safetensors")}
    assert written - kept == dropped_states  # only states the uninterrupted run does not keep either
    assert not dropped_states & {p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*.state.safetensors")}
