"""Training throughput: our trainer against a plain-PyTorch loop of the same model.

Both train the same architecture (the preset's attention-only transformer, rewritten in plain
PyTorch with the TL-native model's exact math, and checked to give the same logits from the
same weights) on the same task batches, with the same optimizer and batch size, on the same
device, in one process. Our side is a whole `icl_lab.train(...)` call (setup, evaluation at
the first and last step, two checkpoints, the run store); the plain side is a bare loop.

    python benchmarks/train_throughput.py [--preset small] [--steps 1000] [--device auto]

Prints steps/s of each and the ratio ours/plain (target >= 0.9).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from icl_lab import get_preset, train
from icl_lab.models import build_model
from icl_lab.provenance import resolve_device
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


def plain_loop(config, device, steps: int) -> float:
    """Seconds for `steps` plain training steps (same task, batches, optimizer)."""
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
    start = time.perf_counter()
    for _ in range(steps):
        batch = task.sample_batch(config.train.batch_size, gen)
        loss = F.cross_entropy(model(batch.inputs, batch.positions), batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def ours(config, steps: int) -> float:
    config = config.with_overrides({"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": 0})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, f"{tmp}/run", progress=False)
        return time.perf_counter() - start


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternate the two loops this many times; best time counts")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = get_preset("bursty", args.preset).config.with_overrides({"device": str(device)})
    if config.model.readout != "unembed" or config.model.normalization != "none" or config.model.positional != "learned":
        raise SystemExit(f"the plain reference model covers attention-only, no-LN, learned-position presets; {args.preset!r} is not")
    ours(config, 20), plain_loop(config, device, 20)  # warm-up
    t_ours, t_plain = [], []
    for _ in range(args.repeats):
        t_plain.append(plain_loop(config, device, args.steps))
        t_ours.append(ours(config, args.steps))
    sp_ours, sp_plain = args.steps / min(t_ours), args.steps / min(t_plain)
    print(f"device {device}, preset {args.preset}, batch {config.train.batch_size}, {args.steps} steps, torch threads {torch.get_num_threads()}")
    print(f"plain PyTorch loop : {sp_plain:8.1f} steps/s")
    print(f"icl_lab.train      : {sp_ours:8.1f} steps/s  (whole call: setup, 2 evaluations, 2 checkpoints)")
    print(f"ratio ours/plain   : {sp_ours / sp_plain:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
