"""Mutual information between a hidden layer and the input / the label, by binning.

Koch & Ghosh (2025, "A two-phase perspective on deep learning dynamics") track I(T; X) and
I(T; Y) of hidden layers through training without stating their estimator; this module uses the
information-plane estimator of Shwartz-Ziv & Tishby (2017) as Saxe et al. (2018) apply it to
ReLU layers: every unit of layer T is discretised into `bins` equal-width bins spanning the
layer's range on the probe set, each binned activation vector is one symbol, and the plug-in
entropies of the symbol counts give (in bits)

    I(A; B) = H(A) + H(B) − H(A, B).

The input X is the identity of each probe example (distinct inputs are distinct symbols), so
for a deterministic network on distinct inputs I(T; X) = H(T) ≤ log₂ D. Default: 30 bins
(Shwartz-Ziv & Tishby's choice).

The joint estimate saturates at log₂ D as soon as the binned vectors of the D probe inputs
are all distinct, which for layers of tens of units is the rule (it moves only when the layer
compresses, e.g. many ReLUs off). So each layer is also reported unit by unit: the mean over
units j of I(T_j; X) and I(T_j; Y), each unit binned alone (≤ log₂ bins bits), which moves as
units become selective.
"""

from __future__ import annotations

import torch

from icl_lab.measures.registry import EvalData, register_measure
from icl_lab.measures.sites import last_position, representation_hooks

BINS = 30


def symbols(x: torch.Tensor) -> torch.Tensor:
    """One integer symbol per row of x [n, ...]: equal rows get equal symbols."""
    return torch.unique(x.reshape(x.shape[0], -1), dim=0, return_inverse=True)[1]


def bin_symbols(act: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Symbols of act [n, units] after binning every unit into `bins` equal-width bins over
    [min, max] of the whole layer."""
    act = act.detach().double().reshape(act.shape[0], -1)
    lo, hi = act.min(), act.max()
    width = (hi - lo).clamp_min(1e-12) / bins
    idx = ((act - lo) / width).floor().clamp(0, bins - 1).long()
    return symbols(idx)


def entropy_bits(sym: torch.Tensor) -> torch.Tensor:
    """Plug-in entropy H = −Σ p log₂ p of the symbol frequencies."""
    p = torch.bincount(sym).double()
    p = p[p > 0] / sym.numel()
    return -(p * p.log2()).sum()


def mutual_information_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """I(A; B) = H(A) + H(B) − H(A, B) for two symbol sequences of equal length."""
    joint = a * (int(b.max()) + 1) + b
    return entropy_bits(a) + entropy_bits(b) - entropy_bits(symbols(joint[:, None]))


def _reads(model, task) -> dict[str, list[str]]:
    return {task.probe_set: representation_hooks(model)}


@register_measure("mutual_information", needs=("probe_set",), reads=_reads)
def mutual_information(model, data: EvalData, bins: int = BINS) -> dict:
    """I(T; X) (`mi_input.<layer>`) and I(T; Y) (`mi_label.<layer>`) in bits, binning
    estimator (Shwartz-Ziv & Tishby 2017), for each hidden layer T: an MLP's hidden layers;
    a transformer's residual stream after each block at the answer position. X = the probe
    example, Y = its target class."""
    set_name = data.task.probe_set
    batch = data.batches[set_name]
    x_sym = symbols(batch.inputs)
    y_sym = symbols(batch.targets[:, None])
    out = {}
    for hook in representation_hooks(model):
        act = last_position(data.activations(model, set_name, hook), model)
        t_sym = bin_symbols(act, bins)
        out[f"mi_input.{hook}"] = mutual_information_bits(t_sym, x_sym)
        out[f"mi_label.{hook}"] = mutual_information_bits(t_sym, y_sym)
        unit_in, unit_label = unit_mutual_information(act, x_sym, y_sym, bins)
        out[f"mi_input_unit.{hook}"] = unit_in
        out[f"mi_label_unit.{hook}"] = unit_label
    return out


def unit_mutual_information(act: torch.Tensor, x_sym: torch.Tensor, y_sym: torch.Tensor, bins: int = BINS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over units j of I(T_j; X) and of I(T_j; Y), each unit binned over its own range.

    Vectorised: unit j's bin b becomes symbol j·bins + b, and the per-unit entropies are
    plug-in entropies of per-unit histograms."""
    act = act.detach().double()
    n, units = act.shape
    lo, hi = act.min(0).values, act.max(0).values
    width = (hi - lo).clamp_min(1e-12) / bins
    idx = ((act - lo) / width).floor().clamp(0, bins - 1).long()  # [n, units]

    def unit_entropies(codes: torch.Tensor, size: int) -> torch.Tensor:
        # codes [n, units] in 0..size-1 -> H per unit, bits
        offset = torch.arange(units, device=codes.device) * size
        counts = torch.bincount((codes + offset).flatten(), minlength=units * size).reshape(units, size).double()
        p = counts / n
        return -(torch.xlogy(p, p) / torch.log(torch.tensor(2.0, dtype=torch.float64))).sum(1)

    h_t = unit_entropies(idx, bins)
    results = []
    for other in (x_sym, y_sym):
        k = int(other.max()) + 1
        if k == n:  # every example its own symbol: T_j is a function of it, I = H(T_j)
            results.append(h_t.mean())
            continue
        joint = idx * k + other[:, None]
        h_joint = unit_entropies(joint, bins * k)
        results.append((h_t + entropy_bits(other) - h_joint).mean())
    return results[0], results[1]
