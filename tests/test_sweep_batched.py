"""Sweeps with the batched executor: members trained in groups equal the local executor's runs,
incompatible members train alone, a group stopped together resumes together, groups respect
--group-size, a failed group does not fail its innocent members, reruns skip finished members."""

import dataclasses

import numpy as np
import pytest

from icl_lab.batched import partition, train_group
from icl_lab.cli import main
from icl_lab.config import ConfigError
from icl_lab.store import intact_state_steps, load_run, paths, read_status, read_summary
from icl_lab.grid_policy import GridPlan, WantedRun
from icl_lab.sweep import SweepInterrupted, SweepPaths, load_sweep, run_batch, run_sweep, sweep_jobs
from interventions import Intervention
from test_batched import ATOL, RTOL, metric_table
from test_resume import crash_at_evaluation
from test_sweep import spec

CONDITIONS = '''
[conditions.none]
[[conditions.induction.intervention]]
hook = "blocks.1.attn.hook_pattern"
heads = [0]
query_positions = "query"
target = "induction"
[[conditions.running.intervention]]
hook = "blocks.0.hook_resid_post"
positions = "labels"
target = "running_mean"
'''


def groups_of(out, names):
    """Each member's group as its summary records it (None: trained alone)."""
    return {name: read_summary(out / "runs" / name).get("group") for name in names}


def assert_same_runs(ours, theirs, names):
    for name in names:
        steps, metrics, values = metric_table(ours / "runs" / name)
        ref_steps, ref_metrics, ref_values = metric_table(theirs / "runs" / name)
        assert (steps, metrics) == (ref_steps, ref_metrics), name
        np.testing.assert_allclose(values, ref_values, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.slow
def test_batched_sweep_equals_local_and_trains_an_unbatchable_member_alone(tmp_path):
    path = spec(tmp_path, '[axes]\nseed = [0, 1]\ncondition = ["none", "induction", "running"]\n' + CONDITIONS)
    local = run_sweep(path, tmp_path / "local", progress=False, threads=1)
    batched = run_sweep(path, tmp_path / "batched", executor="batched", progress=False, threads=1)
    names = local["run"].to_list()
    assert batched["run"].to_list() == names and set(batched["status"]) == {"done"}
    assert_same_runs(tmp_path / "batched", tmp_path / "local", names)
    finals = [c for c in local.columns if c.startswith("final.") and "wall" not in c]
    np.testing.assert_allclose(batched.select(finals).to_numpy(), local.select(finals).to_numpy(), rtol=RTOL, atol=ATOL)
    groups = groups_of(tmp_path / "batched", names)
    together = [n for n in names if "running" not in n]  # no clamp and the induction clamp share a group
    assert len(together) == 4
    for name in together:
        assert groups[name] == {"size": 4, "members": together}
    for name in set(names) - set(together):  # running_mean: alone, with train(), so equal to the bit
        assert groups[name] is None
        assert load_run(tmp_path / "batched" / "runs" / name).metrics.equals(load_run(tmp_path / "local" / "runs" / name).metrics)
    assert read_summary(tmp_path / "batched" / "runs" / together[1])["intervention_calls"]  # the clamp fired in the group


@pytest.mark.slow
def test_group_size_caps_the_groups_and_a_rerun_skips_finished_members(tmp_path):
    path = spec(tmp_path, "[axes]\nseed = [0, 1, 2, 3, 4]\n")
    out = tmp_path / "out"
    table = run_sweep(path, out, executor="batched", group_size=2, workers=2, progress=False, threads=1)  # worker processes
    names = table["run"].to_list()
    assert set(table["status"]) == {"done"}
    groups = groups_of(out, names)
    # 5 compatible members in at most 2 per group: 3 groups (near-equal), one a single run
    recorded = {tuple(g["members"]) for g in groups.values() if g is not None}
    assert sorted(len(members) for members in recorded) == [2, 2]
    alone = [n for n, g in groups.items() if g is None]
    assert len(alone) == 1 and sorted(alone + [n for members in recorded for n in members]) == sorted(names)
    for members in recorded:
        for name in members:
            assert groups[name] == {"size": 2, "members": list(members)}
    mtimes = {n: paths(out / "runs" / n).metrics.stat().st_mtime_ns for n in names}
    again = run_sweep(path, out, executor="batched", group_size=2, progress=False, threads=1)
    assert again.equals(table)
    assert {n: paths(out / "runs" / n).metrics.stat().st_mtime_ns for n in names} == mtimes


def test_a_stopped_group_resumes_as_a_group_from_its_checkpoints(tmp_path, monkeypatch):
    path = spec(tmp_path, "[axes]\nseed = [0, 1]\n", steps=12, checkpoint_every=4)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        # evaluations 0 and 4 of both members pass; member 0's at step 8 is interrupted (Ctrl-C)
        crash_at_evaluation(m, 5)
        from icl_lab.measures import registry

        crash = registry.MEASURES["icl_accuracy"].fn

        def ctrl_c(model, data):
            try:
                return crash(model, data)
            except RuntimeError:
                raise KeyboardInterrupt from None

        m.setitem(registry.MEASURES, "icl_accuracy", dataclasses.replace(registry.MEASURES["icl_accuracy"], fn=ctrl_c))
        with pytest.raises(SweepInterrupted):
            run_sweep(path, out, executor="batched", progress=False, threads=1)
    names = [run.name for run in load_sweep(path)[0]]
    assert {n: read_status(out / "runs" / n)["state"] for n in names} == dict.fromkeys(names, "stopped")
    # the stopped member says which command continues it: the sweep, not `icl-lab resume`
    advice = read_status(out / "runs" / names[0])["error"]
    assert f"icl-lab sweep {path} --out {out} --executor batched" in advice and "icl-lab resume" not in advice
    stopped_at = {n: intact_state_steps(out / "runs" / n)[0][-1] for n in names}
    assert all(0 < step < 8 for step in stopped_at.values()), stopped_at
    kept = {n: paths(out / "runs" / n).weights(step) for n, step in stopped_at.items()}
    kept = {n: (f.stat().st_mtime_ns, f.read_bytes()) for n, f in kept.items()}
    table = run_sweep(path, out, executor="batched", progress=False, threads=1)
    assert set(table["status"]) == {"done"}
    for name, step in stopped_at.items():  # resumed from that checkpoint, not started afresh, and together
        weights = paths(out / "runs" / name).weights(step)
        assert (weights.stat().st_mtime_ns, weights.read_bytes()) == kept[name]
        assert read_summary(out / "runs" / name)["group"] == {"size": 2, "members": names}
    run_sweep(path, tmp_path / "local", progress=False, threads=1)
    assert_same_runs(out, tmp_path / "local", names)
    # and the group, stopped and resumed, is the group trained without a stop
    run_sweep(path, tmp_path / "whole", executor="batched", progress=False, threads=1)
    for name in names:
        assert load_run(out / "runs" / name).metrics.equals(load_run(tmp_path / "whole" / "runs" / name).metrics), name


def test_a_failing_member_fails_alone_and_its_group_finishes(tmp_path, capfd):
    path = spec(tmp_path, '[axes]\n"train.lr" = [0.003, 1e30]\nseed = [0, 1]\n')  # lr 1e30 diverges
    table = run_sweep(path, tmp_path / "out", executor="batched", progress=False, threads=1)
    assert dict(zip(table["run"], table["status"])) == {"lr=0.003-seed=0": "done", "lr=0.003-seed=1": "done",
                                                        "lr=1e+30-seed=0": "failed", "lr=1e+30-seed=1": "failed"}
    assert all("non-finite" in e for e in table.filter(table["status"] == "failed")["error"])
    assert "failed (NonFiniteLoss" in capfd.readouterr().err


def test_resuming_members_group_only_with_members_resuming_from_the_same_step(tmp_path):
    path = spec(tmp_path, '[axes]\nseed = [0, 1, 2, 3]\ncondition = ["none", "running"]\n' + CONDITIONS)
    runs, _ = load_sweep(path)
    layout = SweepPaths(tmp_path / "out")
    wanted = {run.name: WantedRun(layout.run(run.name), run.run_config()) for run in runs}
    resumes = {"seed=0-condition=none": 4, "seed=1-condition=none": 4, "seed=2-condition=none": 8, "seed=0-condition=running": 4}
    plan = GridPlan(resumed=[(wanted[name], step) for name, step in resumes.items()],
                    new=[w for name, w in wanted.items() if name not in resumes])
    jobs = sweep_jobs(plan.batches(64), {w.run_dir: run for run, w in zip(runs, wanted.values())}, "icl-lab sweep s.toml --out out")
    assert all(job.call.func is run_batch for job in jobs)
    batches = [(job.call.args[0].resume, [m.name for m in job.call.args[1]]) for job in jobs]
    # largest first; running_mean clamps never share a group; resumed members only with the same step
    assert batches[0] == (True, ["seed=0-condition=none", "seed=1-condition=none"])
    assert sorted(batches[1:], key=str) == sorted([
        (True, ["seed=2-condition=none"]), (True, ["seed=0-condition=running"]), (False, ["seed=3-condition=none"]),
        (False, ["seed=1-condition=running"]), (False, ["seed=2-condition=running"]), (False, ["seed=3-condition=running"]),
    ], key=str)
    assert [job.size for job in jobs] == [2, 1, 1, 1, 1, 1, 1]
    assert [b.size for b in plan.batches(group_size=1)] == [1] * 8  # group size 1: each alone


def test_partition_follows_the_rules_train_group_checks(tmp_path, tiny_run_config):
    running = Intervention(hook="blocks.0.hook_resid_post", positions="labels", target="running_mean")
    configs = [
        tiny_run_config,                                                     # 0
        tiny_run_config.with_overrides({"seed": 1, "train.lr": 3e-3}),        # 1: with 0
        tiny_run_config.with_overrides({"model.d_model": 32}),               # 2: other shapes
        tiny_run_config.with_overrides({"task.dim": 17}),                    # 3: other inputs
        dataclasses.replace(tiny_run_config, interventions=(running,)),      # 4: unbatchable
        tiny_run_config.with_overrides({"seed": 2, "task.burstiness": 4}),   # 5: with 0
        tiny_run_config.with_overrides({"seed": 3, "model.init_range": 0.1}),  # 6: with 0
    ]
    assert partition(configs) == [[0, 1, 5, 6], [2], [3], [4]]
    assert partition(configs, 3) == [[0, 1], [2], [3], [4], [5, 6]]
    assert partition(configs, 1) == [[i] for i in range(7)]
    with pytest.raises(ConfigError, match="max_size=0"):
        partition(configs, 0)
    # train_group refuses what partition keeps apart, before writing anything
    for other in (2, 3, 4):
        with pytest.raises(ConfigError):
            train_group([configs[0], configs[other]], [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("args, words", [
    (["--executor", "local", "--group-size", "2"], ["--group-size 2", "batched", "ray"]),
    (["--executor", "batched", "--group-size", "0"], ["--group-size", "0"]),
    (["--executor", "batch"], ["batch", "local", "ray", "batched"]),
])
def test_bad_executor_and_group_size_are_refused_before_any_work(tmp_path, capsys, args, words):
    path = spec(tmp_path, "[axes]\nseed = [0]\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(path), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().splitlines()[-1].startswith("icl-lab sweep: error: ")
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="group size 2 .*batched, ray"):
        run_sweep(path, tmp_path / "out", executor="local", group_size=2, progress=False)
    assert not (tmp_path / "out").exists()

