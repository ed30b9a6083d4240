"""train.compile: the compiled training step equals the eager one, clamps included.

Every target that can run in a compiled step is used at once on the reference preset (and
Singh's perfect copying on his pairs task), compiled against eager: the metrics at every
evaluation agree to float reassociation (the compiled kernels fuse and reorder sums), the clamp
call counts are equal, and a clamp window that opens and closes recompiles where it changes
and nowhere else. The targets that cannot are refused before anything is written, naming why.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from icl_lab import ConfigError, get_preset, train
from icl_lab.experiments.singh import KEEP_ONE, PERFECT_COPYING
from icl_lab.run_config import RunConfig
from icl_lab.train.compiled import REFUSED_TARGETS
from icl_lab.train.training_run import TrainingRun
from interventions.spec import Intervention
from interventions.targets import TARGET_CLASSES

pytestmark = pytest.mark.slow

# the float tolerance of compiled against eager metrics (inductor's fused kernels reassociate sums)
RTOL, ATOL = 1e-4, 1e-5


def bursty_clamps(tmp_path) -> list[Intervention]:
    save_file({"resid": torch.full((17, 64), 0.1)}, str(tmp_path / "t.safetensors"))
    return [
        Intervention(hook="blocks.0.hook_attn_out", positions="query", target="zero", steps=(3, 6)),
        Intervention(hook="blocks.0.attn.hook_z", heads=(1,), target="constant", value=0.25),
        Intervention(hook="blocks.1.hook_resid_pre", positions="labels", target="mean", strength=0.5),
        Intervention(hook="blocks.1.hook_resid_post", positions="query", target="file", file=str(tmp_path / "t.safetensors"), key="resid", strength=0.3),
        Intervention(hook="blocks.0.attn.hook_pattern", heads=(0,), target="previous_token_or_self", strength=0.7),
        Intervention(hook="blocks.1.attn.hook_pattern", heads=(0,), query_positions="query", target="induction_or_other", strength=0.8),
        Intervention(hook="blocks.1.attn.hook_pattern", heads=(1,), query_positions="query", target="induction", gradient="through"),
        Intervention(hook="blocks.0.attn.hook_pattern", heads=(1,), target="previous_token"),
        Intervention(hook="blocks.1.hook_attn_out", target="previous_token_input", strength=0.2),
    ]


def config_with(task: str, preset: str, specs, **train_overrides) -> RunConfig:
    config = get_preset(task, preset).config.with_overrides(
        {"device": "cpu", "train.forward": "lean", "train.checkpoints_per_decade": 0, **{f"train.{k}": v for k, v in train_overrides.items()}})
    return RunConfig.from_dict({**config.to_dict(), "interventions": [s.to_dict() for s in specs]})


def compiled_and_eager(tmp_path, config: RunConfig):
    runs = {}
    for mode in ("off", "default"):
        runs[mode] = train(config.with_overrides({"train.compile": mode}), tmp_path / mode, progress=False)
    return runs["off"], runs["default"]


def assert_same_run(eager, compiled):
    e, c = eager.run_dir, compiled.run_dir
    we, wc = eager.metrics.sort(["step", "metric"]), compiled.metrics.sort(["step", "metric"])
    assert we.select("step", "metric").equals(wc.select("step", "metric")), f"{e} and {c} evaluated other steps or metrics"
    torch.testing.assert_close(torch.tensor(wc["value"].to_list()), torch.tensor(we["value"].to_list()), rtol=RTOL, atol=ATOL, equal_nan=True)
    assert compiled.summary["intervention_calls"] == eager.summary["intervention_calls"]


def test_every_compilable_target_at_once_equals_eager_and_recompiles_only_where_a_window_changes(tmp_path):
    specs = bursty_clamps(tmp_path)
    assert {s.target for s in specs} | set(REFUSED_TARGETS) | {"perfect_copying"} == set(TARGET_CLASSES)
    config = config_with("bursty", "small", specs, steps=9, eval_every=3, checkpoint_every=0)
    eager, compiled = compiled_and_eager(tmp_path, config)
    assert_same_run(eager, compiled)
    # the zero clamp acts on the updates at steps 3, 4, 5 (trained at steps 4-6): a graph for
    # the first step, one where it opens; where it closes the first graph is used again
    assert compiled.summary["compiled_at_steps"] == [1, 4]
    assert "compiled_at_steps" not in eager.summary


def test_singh_perfect_copying_compiled_equals_eager(tmp_path):
    config = config_with("pairs", "cpu", [KEEP_ONE, PERFECT_COPYING], steps=6, eval_every=3, checkpoint_every=0)
    eager, compiled = compiled_and_eager(tmp_path, config)
    assert_same_run(eager, compiled)
    assert compiled.summary["compiled_at_steps"] == [1]


REFUSED_SPECS = {
    "running_mean": Intervention(hook="blocks.0.hook_resid_post", target="running_mean"),
    "checkpoint": Intervention(hook="blocks.0.hook_resid_post", target="checkpoint", checkpoint_run="runs/elsewhere"),
    "resample": Intervention(hook="blocks.0.hook_resid_post", target="resample"),
    "other_input": Intervention(hook="blocks.0.hook_resid_post", target="other_input"),
    "previous_token_input_pattern": Intervention(hook="blocks.1.attn.hook_pattern", target="previous_token_input_pattern", gradient="value"),
}


@pytest.mark.parametrize("target", sorted(REFUSED_TARGETS))
def test_a_target_that_cannot_compile_is_refused_up_front_naming_why(target, tmp_path):
    config = config_with("bursty", "small", [REFUSED_SPECS[target]], compile="default")
    with pytest.raises(ConfigError, match=rf"target {target!r} cannot run in a compiled step: .*set train.compile=off"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_compile_needs_the_lean_forward_and_cuda_for_cuda_graphs():
    config = get_preset("bursty", "small").config.with_overrides({"device": "cpu", "train.forward": "bridge", "train.compile": "default"})
    with pytest.raises(ConfigError, match="needs the lean forward"):
        TrainingRun(config, torch.device("cpu"))
    with pytest.raises(ConfigError, match="'reduce-overhead' is CUDA graphs"):
        TrainingRun(config.with_overrides({"train.forward": "lean", "train.compile": "reduce-overhead"}), torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.compile='fast' is not one of off, default"):
        config.with_overrides({"train.compile": "fast"})
