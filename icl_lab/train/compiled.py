"""`train.compile`: a training step's forward and loss (and, through AOTAutograd, its backward)
compiled with torch.compile, with the TransformerLens hooks and the run's clamps inside the
graph. The optimizer step stays eager.

TL4's TransformerBridge does not compile usefully: dynamo breaks its forward into 7 graphs (6
graph breaks in the bridge's Python: `type.__getattribute__`, weakref proxies) and the
compiled step of modular/nanda ran slower than the eager one (0.35 against 0.28 s on 2 cores).
The lean forward (icl_lab/lean_forward.py: the same function and hook points from the bridge's
weights) compiles to one graph, hooks and clamps included, so `train.compile` needs it
(`train.forward` lean or auto; a model the lean forward does not cover is refused, naming why).

What stays outside the graph, so that nothing recompiles every step:
- the clamps' call counts: the engine's hooks count nothing while the compiled forward runs
  (`count_in_hooks`), and `InterventionEngine.count_forward` adds one call per active spec and
  hook after it, the count the hooks make themselves in an eager forward;
- which clamps are active: dynamo guards on it, so the step recompiles when a clamp's window
  opens or closes (a handful of times a run; `CompiledLoss.compiled_at` lists the steps).

Targets that run another forward before each forward, or accumulate state across forwards, are
refused up front (`REFUSED_TARGETS`, with the reason); tests/test_compiled.py checks every
other target: compiled losses equal eager ones to float reassociation, call counts equal.
"""

from __future__ import annotations

import torch

from icl_lab.config import ConfigError

COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead")

REFUSED_TARGETS = {
    "running_mean": "it updates its running mean from each forward's activations, state that a compiled graph would freeze",
    "checkpoint": "it runs the reference model on each batch before the forward, a second model call inside the step",
    "resample": "it runs the model on another batch before each forward, a second model call inside the step",
    "other_input": "it runs the model on the paired input before each forward, a second model call inside the step",
    "previous_token_input_pattern": "it runs the model on the previous-token input before each forward, a second model call inside the step",
}


def check_compile(config, device: torch.device) -> None:
    """Refuse a train.compile setting this run cannot use, before anything is written."""
    mode = config.train.compile
    if mode == "off":
        return
    if config.train.forward == "bridge":
        raise ConfigError(
            f"train.compile={mode!r} needs the lean forward: TL4's bridge breaks into 7 graphs under torch.compile "
            "and runs slower than eager (icl_lab/train/compiled.py); set train.forward=lean (or auto)"
        )
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(f"train.compile='reduce-overhead' is CUDA graphs, and this run's device is {device.type}; "
                          "use train.compile=default or max-autotune-no-cudagraphs")
    for spec in config.interventions:
        if spec.target in REFUSED_TARGETS:
            raise ConfigError(f"intervention {spec.label}: target {spec.target!r} cannot run in a compiled step: "
                              f"{REFUSED_TARGETS[spec.target]}; set train.compile=off")


def graph_count() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompiledLoss:
    """loss = compiled(batch, step): the training forward and loss through torch.compile."""

    def __init__(self, run):  # an icl_lab.train.training_run.TrainingRun
        self.run = run
        mode = run.cfg.compile
        self.fn = torch.compile(self.forward_loss, mode=None if mode == "default" else mode)
        self.compiled_at: list[int] = []  # the steps at which a new graph was compiled

    def forward_loss(self, batch) -> torch.Tensor:
        run = self.run
        logits = run.model.forward_batch(batch)
        return run.task.loss(logits.to(run.loss_dtype), batch)

    def __call__(self, batch, step: int) -> torch.Tensor:
        engine = self.run.engine
        before = graph_count()
        if engine is not None:
            engine.count_in_hooks = False
        try:
            with self.run.training_forward():  # the lean forward (and the cut), set outside the graph
                loss = self.fn(batch)
        finally:
            if engine is not None:
                engine.count_in_hooks = True
        if engine is not None:
            engine.count_forward()
        if graph_count() != before:
            self.compiled_at.append(step)
        return loss
