"""Training throughput: our trainer against a plain-PyTorch loop of the same model.

Both train the same architecture (the preset's attention-only transformer, rewritten in plain
PyTorch as one would by hand, and checked to give the same logits from the same weights) on the
same task batches, with the same optimizer and batch size, on the same device, in one process.
Our side is a whole `icl_lab.train(...)` call (setup, evaluation at the first and last step, a
checkpoint at the first and the last step, the run store; the preset's denser log-spaced and
window checkpoints only with --dense-checkpoints) with every TransformerLens hook point of the
bridge firing on every forward; the plain side is a bare loop. The two alternate, `--repeats`
times each, so both see the same machine load.

    python benchmarks/train_throughput.py [--preset small] [--steps 1000] [--repeats 3]
                                          [--threads N] [--device auto] [--dense-checkpoints]

Prints steps/s of each (median over the repeats) and the ratio ours/plain: the median of the
per-repeat ratios (each pair ran back to back), by wall time and by this process's CPU time (on
CPU the steadier figure when other processes share the cores; on CUDA the wall figure counts).
Target: ratio >= 0.9.

Where the rest goes (bursty/small, batch 128, 1 thread, CPU time per training step): the plain
model's forward and backward take about 14.6 ms. TL's native math adds 1.0 ms: 0.5 ms to
unembed all 17 positions (hook_unembed carries [batch, pos, vocab]; the plain model unembeds
the last one) and 0.5 ms to mask the softmaxed pattern a second time (our models skip that
identity, icl_lab/models.py). The bridge's per-call Python (component wrappers, 39 hook points,
its forward's argument handling) adds 1.4 ms as TL ships it, 1.0 ms with our caches (0.55 ms
a forward at batch 1). Outside the steps: two evaluations, about 0.35 s a run.
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

from icl_lab import get_preset, train
from icl_lab.models import build_model
from icl_lab.provenance import resolve_device
from icl_lab.store import checkpoint_steps
from icl_lab.tasks import make_task
from icl_lab.train import make_optimizer


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


class PlainAttnOnly(nn.Module):
    """Attention-only transformer, no LayerNorm, learned positions, linear input map."""

    def __init__(self, d_input, d_model, n_heads, d_head, n_layers, n_ctx, n_out):
        super().__init__()
        self.input_map = nn.Linear(d_input, d_model, bias=False)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList(PlainAttention(d_model, n_heads, d_head, n_ctx) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, n_out)

    def forward(self, inputs, positions):
        x = self.input_map(inputs) + self.pos(positions)
        for block in self.blocks:
            x = x + block(x)
        return self.unembed(x[:, -1])

    def copy_from(self, lab_model) -> None:
        state = lab_model.checkpoint_state()
        with torch.no_grad():
            self.input_map.weight.copy_(state["input_map.weight"])
            self.pos.weight.copy_(state["bridge.pos_embed.weight"])
            for i, block in enumerate(self.blocks):
                for name in ("q", "k", "v", "o"):
                    getattr(block, name).weight.copy_(state[f"bridge.blocks.{i}.attn.{name}.weight"])
                    getattr(block, name).bias.copy_(state[f"bridge.blocks.{i}.attn.{name}.bias"])
            self.unembed.weight.copy_(state["bridge.unembed.weight"])
            self.unembed.bias.copy_(state["bridge.unembed.bias"])


def plain_loop(config, device, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `steps` plain training steps (same task, batches,
    optimizer)."""
    task = make_task(config.task, config.task_config, seed=config.seed, device=device)
    lab = build_model(config.model, task.io, seed=config.seed + 1, device=device)
    m = config.model
    model = PlainAttnOnly(task.io.d_input, m.d_model, m.n_heads, m.head_dim, m.n_layers, task.io.n_ctx, task.io.n_outputs).to(device)
    model.copy_from(lab)
    batch = task.eval_sets(64)["icl"]
    with torch.no_grad():
        assert torch.allclose(model(batch.inputs, batch.positions), lab(batch.inputs, batch.positions), atol=1e-5), \
            "plain model is not the same function as the lab model"
    optimizer = make_optimizer(model, config.train)
    gen = task.make_generator(config.seed + 2)
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = task.sample_batch(config.train.batch_size, gen)
        loss = F.cross_entropy(model(batch.inputs, batch.positions), batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="alternate the two loops this many times; medians count")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--dense-checkpoints", action="store_true",
                        help="keep the preset's log-spaced and window checkpoints in our run (default: first and last only)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = get_preset("bursty", args.preset).config.with_overrides({"device": str(device)})
    if config.model.readout != "unembed" or config.model.normalization != "none" or config.model.positional != "learned":
        raise SystemExit(f"the plain reference model covers attention-only, no-LN, learned-position presets; {args.preset!r} is not")
    ours(config, 20), plain_loop(config, device, 20)  # warm-up
    plain, mine = [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(config, device, args.steps))
        mine.append(ours(config, args.steps, args.dense_checkpoints))
    rate = lambda times, k: statistics.median(args.steps / t[k] for t in times)  # noqa: E731
    ratio = lambda k: statistics.median(p[k] / o[k] for p, o in zip(plain, mine))  # noqa: E731
    print(f"device {device}, preset {args.preset}, batch {config.train.batch_size}, {args.steps} steps, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repeats (medians)")
    print(f"plain PyTorch loop : {rate(plain, 0):8.1f} steps/s")
    print(f"icl_lab.train      : {rate(mine, 0):8.1f} steps/s  (whole call: setup, 2 evaluations, "
          f"{mine[0][2]} checkpoints, every hook point firing)")
    print(f"ratio ours/plain   : {ratio(0):.3f} by wall time, {ratio(1):.3f} by CPU time  (target >= 0.9)")


if __name__ == "__main__":
    main()
