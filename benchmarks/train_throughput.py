"""Training throughput as a fraction of what the machine can do: our trainer against a plain-
PyTorch loop of the same model, eager and compiled, with a roofline.

Both train the same architecture (the preset's transformer, rewritten in plain PyTorch as one
would by hand, and checked to give the same logits from the same weights) on the same task
batches, with the same optimizer, batch size and loss dtype, on the same device, in one
process. Ours is the trainer's own step (`TrainingRun.train_step`: batch, forward with every
TransformerLens hook point of the bridge firing, loss, backward, optimizer and schedule, loss
tally); `--whole-call` adds whole `icl_lab.train` calls (setup, evaluation and a checkpoint at
the first and last step). The plain step also runs through `torch.compile` in each mode of
`--compile` (on CUDA add reduce-overhead: CUDA graphs). The loops alternate, `--repeats` times
each, so all see the same machine load.

    python benchmarks/train_throughput.py [--task bursty|modular] [--preset small|nanda] [--steps N]
        [--repeats 3] [--threads N] [--device auto] [--compile default,max-autotune-no-cudagraphs]
        [--whole-call [--dense-checkpoints]] [--profile]

Prints, for each loop, steps/s (median over the repeats), the ratio to the plain eager loop by
wall time and by this process's CPU time (on CPU the steadier figure when other processes
share the cores), and the roofline: the step's FLOPs (counted by
torch.utils.flop_counter.FlopCounterMode: matmuls and attention, forward and backward) times
steps/s, as a fraction of the machine's measured dense float32 matmul throughput (the best of
five 2048^3 products at the same thread count). `--profile`: the top operators of our step
(torch.profiler, self CPU time), where the time goes. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from icl_lab import get_preset, train
from icl_lab.models import build_model
from icl_lab.provenance import resolve_device
from icl_lab.store import checkpoint_steps
from icl_lab.tasks import make_task
from icl_lab.train import make_optimizer
from icl_lab.train.training_run import TrainingRun


class PlainAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.q = nn.Linear(d_model, n_heads * d_head)
        self.k = nn.Linear(d_model, n_heads * d_head)
        self.v = nn.Linear(d_model, n_heads * d_head)
        self.o = nn.Linear(n_heads * d_head, d_model)
        self.register_buffer("mask", torch.triu(torch.ones(n_ctx, n_ctx, dtype=torch.bool), 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
        pattern = F.softmax(scores.masked_fill(self.mask[:t, :t], float("-inf")), dim=-1)
        return self.o((pattern @ v).transpose(1, 2).reshape(b, t, -1))


class PlainMLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act: str):
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)
        self.act = {"relu": F.relu, "gelu": F.gelu}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class PlainTransformer(nn.Module):
    """The presets' transformer without LayerNorm, learned positions: a linear input map
    (continuous tokens) or an embedding (token ids), attention blocks (with a ReLU/GELU MLP
    unless attention-only), the unembedding at the last position. `cut`: the last block's MLP
    runs at the last position only, as train.last_position_only does."""

    def __init__(self, io, m, cut: bool):
        super().__init__()
        self.continuous = io.input_kind == "continuous"
        self.input_map = nn.Linear(io.d_input, m.d_model, bias=False) if self.continuous else nn.Embedding(io.d_vocab, m.d_model)
        self.pos = nn.Embedding(io.n_ctx, m.d_model)
        self.attn = nn.ModuleList(PlainAttention(m.d_model, m.n_heads, m.head_dim, io.n_ctx) for _ in range(m.n_layers))
        self.mlp = nn.ModuleList() if m.attn_only else nn.ModuleList(PlainMLP(m.d_model, m.d_mlp or 4 * m.d_model, m.act_fn) for _ in range(m.n_layers))
        self.unembed = nn.Linear(m.d_model, io.n_outputs)
        self.cut = cut

    def forward(self, inputs, positions):
        x = self.input_map(inputs) + self.pos(positions)
        for i, attn in enumerate(self.attn):
            x = x + attn(x)
            if self.cut and i == len(self.attn) - 1:
                x = x[:, -1:]
            if len(self.mlp):
                x = x + self.mlp[i](x)
        return self.unembed(x[:, -1])

    def copy_from(self, lab_model) -> None:
        state = lab_model.checkpoint_state()
        names = {"input_map.weight": "input_map.weight" if self.continuous else "bridge.embed.weight", "pos.weight": "bridge.pos_embed.weight",
                 "unembed.weight": "bridge.unembed.weight", "unembed.bias": "bridge.unembed.bias"}
        for i in range(len(self.attn)):
            for part in ("q", "k", "v", "o"):
                for kind in ("weight", "bias"):
                    names[f"attn.{i}.{part}.{kind}"] = f"bridge.blocks.{i}.attn.{part}.{kind}"
            for mine, theirs in (("fc_in", "in"), ("fc_out", "out")):
                if len(self.mlp):
                    for kind in ("weight", "bias"):
                        names[f"mlp.{i}.{mine}.{kind}"] = f"bridge.blocks.{i}.mlp.{theirs}.{kind}"
        own = self.state_dict()
        if set(names) != set(own):
            raise SystemExit(f"the plain model's weights {sorted(set(own) ^ set(names))} have no counterpart in the lab model")
        self.load_state_dict({mine: state[theirs] for mine, theirs in names.items()})


def plain_setup(config, device, compile_mode: str | None = None):
    """(task, plain model, step function, optimizer): the plain model loaded with the lab
    model's initial weights and checked to give the same logits; `compile_mode`: the step's
    forward and backward through torch.compile in that mode."""
    task = make_task(config.task, config.task_config, seed=config.seed, device=device)
    lab = build_model(config.model, task.io, seed=config.seed + 1, device=device)
    model = PlainTransformer(task.io, config.model, cut=config.train.last_position_only).to(device)
    model.copy_from(lab)
    batch = task.sample_batch(64, task.make_generator(0))
    with torch.no_grad():
        assert torch.allclose(model(batch.inputs, batch.positions), lab(batch.inputs, batch.positions), atol=1e-4), \
            "plain model is not the same function as the lab model"
    optimizer = make_optimizer(model, config.train)
    loss_dtype = torch.float64 if config.train.loss_dtype == "float64" else torch.float32

    def forward_loss(inputs, positions, targets):
        return F.cross_entropy(model(inputs, positions).to(loss_dtype), targets)

    forward_loss = torch.compile(forward_loss, mode=compile_mode) if compile_mode else forward_loss

    def step(batch):
        loss = forward_loss(batch.inputs, batch.positions, batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return task, model, step, optimizer


def plain_loop(config, device, steps: int, compile_mode: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `steps` plain training steps (same task, batches,
    optimizer), after 3 untimed steps (compilation, when compiled)."""
    task, _, step, _ = plain_setup(config, device, compile_mode)
    gen = task.make_generator(config.seed + 2)
    for _ in range(3):
        step(task.sample_batch(config.train.batch_size, gen))
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step(task.sample_batch(config.train.batch_size, gen))
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def ours_steps(config, device, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `steps` of our trainer's own training step
    (TrainingRun.train_step: batch, forward with every hook point firing, loss, backward,
    optimizer and schedule, loss tally) without evaluations or checkpoints."""
    run = TrainingRun(config, device)
    run.model.train()
    for s in range(1, 4):
        run.train_step(s)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for s in range(4, 4 + steps):
        run.train_step(s)
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def ours(config, steps: int, dense_checkpoints: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, checkpoints written) of one whole `train` call."""
    overrides = {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": 0}
    if not dense_checkpoints:
        overrides.update({"train.checkpoints_per_decade": 0, "train.checkpoint_window": [0, 0]})
    config = config.with_overrides(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        result = train(config, f"{tmp}/run", progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return wall, cpu, len(checkpoint_steps(result.run_dir))


def step_flops(config, device) -> tuple[float, float, int]:
    """(FLOPs of one training step of our trainer, of the plain model, sequences in the step's
    batch: the task's, which for full-batch modular is the whole training set), counted by
    torch.utils.flop_counter.FlopCounterMode over forward and backward (matmuls, attention;
    elementwise ops count zero, as in every roofline of this kind)."""
    run = TrainingRun(config, device)
    run.model.train()
    with FlopCounterMode(display=False) as ours_count:
        run.train_step(1)
    task, _, step, _ = plain_setup(config, device)
    batch = task.sample_batch(config.train.batch_size, task.make_generator(0))
    with FlopCounterMode(display=False) as plain_count:
        step(batch)
    return float(ours_count.get_total_flops()), float(plain_count.get_total_flops()), int(batch.targets.shape[0])


MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def profile_step(config, device, steps: int, rows: int = 12) -> tuple[str, str]:
    """Where a training step's time goes (torch.profiler, CPU): the top operators by self CPU
    time, and a breakdown per step in ms: the step's phase (forward with loss, backward,
    optimizer; read from each operator's enclosing autograd / Optimizer.step frame) by kind
    (matmul kernels, other operators, compiled fused kernels), and what no operator accounts
    for (Python, dispatch, hooks), the step's wall time less every operator's self time."""
    run = TrainingRun(config, device)
    run.model.train()
    for s in range(1, 4):
        run.train_step(s)
    _sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for s in range(4, 4 + steps):
            run.train_step(s)
        _sync(device)
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    cells: dict[tuple[str, str], float] = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        phase, frame = "forward, loss, batch", event
        while frame is not None:
            if frame.name.startswith("Optimizer.step"):
                phase = "optimizer"
                break
            if frame.name.startswith("autograd::engine") or "Backward" in frame.name:
                phase = "backward"
                break
            frame = frame.cpu_parent
        name = event.name
        kind = ("matmul" if name in MATMUL_OPS else "compiled graph (fused kernels, calls)" if "CompiledFxGraph" in name or name.startswith(("Torch-Compiled", "CompiledFunction", "TorchDynamo"))
                else "other operators")
        cells[phase, kind] = cells.get((phase, kind), 0.0) + event.self_cpu_time_total / 1e3 / steps
    lines = [f"ms per step (wall {wall_ms:.1f} ms, profiled):", "| phase | kind | ms/step | of the step |", "|---|---|---|---|"]
    for (phase, kind), ms in sorted(cells.items(), key=lambda kv: -kv[1]):
        if ms >= 0.05:
            lines.append(f"| {phase} | {kind} | {ms:.2f} | {ms / wall_ms:.0%} |")
    rest = wall_ms - sum(cells.values())
    lines.append(f"| (none) | Python, dispatch, hooks: no operator | {rest:.2f} | {rest / wall_ms:.0%} |")
    top = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return top, "\n".join(lines)


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """The machine's measured dense float32 matmul throughput (FLOP/s) at the current thread
    count: the best of `repeats` n x n x n products, 2n^3 FLOPs each."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="bursty", choices=["bursty", "modular"])
    parser.add_argument("--preset", default=None, help="default: small (bursty), nanda (modular)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 300 bursty, 20 modular)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="alternate the loops this many times; medians count")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--compile", default="default,max-autotune-no-cudagraphs", metavar="MODES",
                        help="torch.compile modes of the plain step to time beside eager (comma-separated; '' for none; "
                        "reduce-overhead: CUDA graphs, on CUDA)")
    parser.add_argument("--whole-call", action="store_true",
                        help="also time whole icl_lab.train calls (setup, 2 evaluations, first and last checkpoints)")
    parser.add_argument("--dense-checkpoints", action="store_true",
                        help="with --whole-call: keep the preset's log-spaced and window checkpoints (default: first and last only)")
    parser.add_argument("--profile", action="store_true", help="print the top operators of our training step (torch.profiler)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = args.preset or {"bursty": "small", "modular": "nanda"}[args.task]
    steps = args.steps or {"bursty": 300, "modular": 20}[args.task]
    config = get_preset(args.task, preset).config.with_overrides({"device": str(device)})
    m = config.model
    if m.readout != "unembed" or m.normalization != "none" or m.positional != "learned" or m.act_fn not in ("relu", "gelu"):
        raise SystemExit(f"the plain reference model covers no-LN, learned-position presets with an unembedding readout; {args.task}/{preset} is not")
    modes = [mode for mode in args.compile.split(",") if mode]
    lean = config.with_overrides({"train.forward": "lean"})
    loops = {"plain PyTorch, eager": lambda: plain_loop(config, device, steps),
             "icl_lab train_step, bridge forward": lambda: ours_steps(config.with_overrides({"train.forward": "bridge"}), device, steps),
             "icl_lab train_step, lean forward": lambda: ours_steps(lean, device, steps)}
    for mode in modes:
        loops[f"plain PyTorch, compiled ({mode})"] = lambda mode=mode: plain_loop(config, device, steps, mode)
        loops[f"icl_lab train_step, lean, compiled ({mode})"] = lambda mode=mode: ours_steps(lean.with_overrides({"train.compile": mode}), device, steps)
    if args.whole_call:
        loops["icl_lab.train, whole call"] = lambda: ours(config, steps, args.dense_checkpoints)[:2]
        ours(config, 5)  # warm-up
    times: dict[str, list] = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, loop in loops.items():
            times[name].append(loop())
    if args.profile:
        profiled = {"lean forward, eager": lean}
        profiled.update({f"lean, compiled ({mode})": lean.with_overrides({"train.compile": mode}) for mode in modes[:1]})
        for name, profiled_config in profiled.items():
            top, breakdown = profile_step(profiled_config, device, steps)
            print(f"### our step, {name}: top operators by self CPU time\n{top}\n{breakdown}\n")
    ours_flops, plain_flops, batch_rows = step_flops(config, device)
    peak = matmul_peak(device)
    base = "plain PyTorch, eager"
    print(f"device {device}, {args.task}/{preset}, batch {batch_rows} sequences, {steps} timed steps, torch threads "
          f"{torch.get_num_threads()}, {args.repeats} repeats (medians); measured matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"FLOPs a step: ours {ours_flops / 1e9:.3f} G, plain {plain_flops / 1e9:.3f} G")
    print("| loop | steps/s | vs plain eager (wall) | vs plain eager (CPU time) | GFLOP/s | of the matmul peak |")
    print("|---|---|---|---|---|---|")
    for name, runs in times.items():
        rate = statistics.median(steps / t[0] for t in runs)
        by_wall = statistics.median(p[0] / o[0] for p, o in zip(times[base], runs))
        by_cpu = statistics.median(p[1] / o[1] for p, o in zip(times[base], runs))
        flops = ours_flops if name.startswith("icl_lab") else plain_flops
        print(f"| {name} | {rate:.2f} | {by_wall:.3f} | {by_cpu:.3f} | {rate * flops / 1e9:.1f} | {rate * flops / peak:.0%} |")


if __name__ == "__main__":
    main()
