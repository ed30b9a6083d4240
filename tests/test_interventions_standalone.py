"""The interventions package on a TransformerLens 4 model built without the lab: a bare
native bridge on token ids, behind a thin adapter that provides the engine's protocols.
Nothing here imports icl_lab, and the package must not either."""

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

import interventions
from interventions import ConfigError, Intervention, InterventionEngine

VOCAB, T = 11, 6


@dataclass
class Tokens:
    inputs: torch.Tensor  # [batch, pos] token ids
    positions: torch.Tensor | None = None


class TokenTask:
    """Random token sequences: all the engine needs from a task is a batch to dry-run."""

    def make_generator(self, seed):
        return torch.Generator().manual_seed(seed)

    def sample_batch(self, n, generator):
        return Tokens(torch.randint(0, VOCAB, (n, T), generator=generator))


class BridgeModel:
    """A TransformerBridge as an interventions.protocols.HookedModel (+ ForwardCallbacks)."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.current_batch = None
        self.pre_forward_callbacks = []

    def __call__(self, tokens, positions=None, *, batch=None):
        for callback in self.pre_forward_callbacks:
            callback(self, tokens, positions, batch)
        return self.bridge(tokens)  # [batch, pos, vocab]

    def parameters(self):
        return self.bridge.parameters()

    def hook_names(self):
        with torch.no_grad():
            _, cache = self.bridge.run_with_cache(torch.zeros(1, T, dtype=torch.long))
        return sorted(cache.keys())  # the hooks that fire; gated ones are skipped

    def hook_point(self, name):
        return self.bridge.hook_dict[name]

    def run_with_cache(self, inputs, positions=None, names=None, *, batch=None):
        cache = {}

        def saver(name):  # keyed by the name asked for: hook_z is an alias of attn.o.hook_in
            def save(act, hook):
                cache[name] = act.detach()

            return save

        with self.bridge.hooks(fwd_hooks=[(n, saver(n)) for n in (names or [])]):
            out = self(inputs, positions, batch=batch)
        return out, cache


class BridgeModelWithoutCallbacks(BridgeModel):
    """The same adapter without the ForwardCallbacks capability."""

    def __init__(self, bridge):
        self.bridge = bridge
        self.current_batch = None

    def __call__(self, tokens, positions=None, *, batch=None):
        return self.bridge(tokens)


def hook_count(bridge):
    """Hooks on the bridge's hook points (list_hooks lists an aliased point once per name)."""
    return len({id(handle) for handles in bridge.list_hooks().values() for handle in handles})


@pytest.fixture
def bridge():
    cfg = TransformerBridgeConfig(
        d_model=16, d_head=8, n_heads=2, n_layers=2, n_ctx=T, d_vocab=VOCAB, d_vocab_out=VOCAB,
        attn_only=True, act_fn="relu", normalization_type="LN", seed=3,
    )
    return TransformerBridge.boot_native(cfg, device=torch.device("cpu"))


@pytest.fixture
def tokens():
    return torch.randint(0, VOCAB, (4, T), generator=torch.Generator().manual_seed(7))


def clamped_output(bridge, tokens, spec, **kw):
    model = BridgeModel(bridge)
    with InterventionEngine(model, TokenTask(), [spec], **kw) as engine:
        engine.set_step(0, "eval")
        with torch.no_grad():
            return model(tokens)


def test_zero_ablating_one_head_matches_a_hand_written_hook(bridge, tokens):
    def ablate_head_1(z, hook):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with torch.no_grad():
        plain = bridge(tokens)
        with bridge.hooks(fwd_hooks=[("blocks.0.attn.hook_z", ablate_head_1)]):
            expected = bridge(tokens)
    got = clamped_output(bridge, tokens, Intervention(hook="blocks.0.attn.hook_z", heads=(1,), target="zero", apply="eval"))
    assert not torch.allclose(expected, plain)  # the ablation matters...
    assert torch.equal(got, expected)  # ...and the engine did exactly it


def test_pattern_clamped_to_a_file_and_a_constant(bridge, tokens, tmp_path):
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)  # [query_pos, key_pos], causal
    save_file({"pattern": uniform}, str(tmp_path / "uniform.safetensors"))

    def replace_head_0(value):
        def hook(pattern, hook):  # [batch, head, query_pos, key_pos]
            pattern = pattern.clone()
            pattern[:, 0] = value
            return pattern

        return hook

    name = "blocks.1.attn.hook_pattern"
    with torch.no_grad():
        plain = bridge(tokens)
        for value, spec in (
            (uniform, Intervention(hook=name, heads=(0,), target="file", file=str(tmp_path / "uniform.safetensors"), apply="eval")),
            (0.5, Intervention(hook=name, heads=(0,), target="constant", value=0.5, apply="eval")),
        ):
            with bridge.hooks(fwd_hooks=[(name, replace_head_0(value))]):
                expected = bridge(tokens)
            got = clamped_output(bridge, tokens, spec)
            assert not torch.allclose(expected, plain)
            assert torch.equal(got, expected)


def test_close_leaves_no_hook_and_the_unclamped_output(bridge, tokens):
    with torch.no_grad():
        plain = bridge(tokens)
    model = BridgeModel(bridge)
    specs = [
        Intervention(hook="blocks.0.attn.hook_z", heads=(0,), target="zero"),
        Intervention(hook="blocks.{layer}.attn.hook_pattern", layers=(0, 1), target="constant", value=0.1),
        Intervention(hook="blocks.1.hook_resid_pre", target="resample"),
    ]
    engine = InterventionEngine(model, TokenTask(), specs)
    engine.set_step(0, "train")
    assert hook_count(bridge) == 4  # one per hook name
    with torch.no_grad():
        assert not torch.allclose(model(tokens), plain)
    engine.set_step(0, "eval")  # same specs active: nothing reinstalled
    assert hook_count(bridge) == 4
    engine.close()
    assert bridge.list_hooks() == {}  # permanent ones included
    assert model.pre_forward_callbacks == []
    with torch.no_grad():
        assert torch.equal(model(tokens), plain)


def test_closing_one_engine_keeps_another_engines_hooks(bridge, tokens):
    name = "blocks.0.hook_resid_post"
    model = BridgeModel(bridge)
    with torch.no_grad():
        only_second = clamped_output(bridge, tokens, Intervention(hook=name, positions=1, target="zero"))
    first = InterventionEngine(model, TokenTask(), [Intervention(hook=name, positions=0, target="zero")])
    second = InterventionEngine(model, TokenTask(), [Intervention(hook=name, positions=1, target="zero")])
    first.set_step(0, "train")
    second.set_step(0, "train")
    first.close()
    with torch.no_grad():
        assert torch.equal(model(tokens), only_second)
    second.close()
    assert bridge.list_hooks() == {}


def test_hooks_that_cannot_act_are_refused_with_the_reason(bridge):
    model = BridgeModel(bridge)
    with pytest.raises(ConfigError, match=r"would do nothing.*after the softmax.*'blocks.0.attn.hook_pattern'"):
        InterventionEngine(model, TokenTask(), [Intervention(hook="blocks.0.attn.hook_attn_scores")])
    with pytest.raises(ConfigError, match=r"switched off.*set_use_attn_result"):
        InterventionEngine(model, TokenTask(), [Intervention(hook="blocks.0.attn.hook_result")])
    with pytest.raises(ConfigError, match=r"'embed.hook_in' carries torch.int64 values \(indices"):
        InterventionEngine(model, TokenTask(), [Intervention(hook="embed.hook_in")])  # the token ids


def test_a_target_that_needs_a_capability_the_model_lacks_is_refused(bridge):
    model = BridgeModelWithoutCallbacks(bridge)
    with pytest.raises(ConfigError, match=r"resample.*ForwardCallbacks.*BridgeModelWithoutCallbacks"):
        InterventionEngine(model, TokenTask(), [Intervention(hook="blocks.0.hook_resid_post", target="resample")])
    with pytest.raises(ConfigError, match=r"previous_token.*TokenTask.*no ideal attention"):
        InterventionEngine(model, TokenTask(), [Intervention(hook="blocks.0.attn.hook_pattern", target="previous_token")])
    with pytest.raises(ConfigError, match=r"checkpoint.*load_reference"):
        InterventionEngine(BridgeModel(bridge), TokenTask(), [Intervention(hook="blocks.0.hook_resid_post", target="checkpoint", checkpoint_run="r")])


def test_checkpoint_target_uses_the_injected_loader(bridge, tokens):
    cfg = TransformerBridgeConfig(
        d_model=16, d_head=8, n_heads=2, n_layers=2, n_ctx=T, d_vocab=VOCAB, d_vocab_out=VOCAB,
        attn_only=True, act_fn="relu", normalization_type="LN", seed=4,
    )
    other = TransformerBridge.boot_native(cfg, device=torch.device("cpu"))
    asked = []

    def load_reference(run, step, device):
        asked.append((run, step, device))
        return BridgeModel(other)

    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, theirs = other.run_with_cache(tokens, names_filter=[name])

        def graft(act, hook):
            return theirs[name]

        with bridge.hooks(fwd_hooks=[(name, graft)]):
            expected = bridge(tokens)
    got = clamped_output(bridge, tokens, Intervention(hook=name, target="checkpoint", checkpoint_run="other", checkpoint_step=5), load_reference=load_reference)
    assert asked == [("other", 5, torch.device("cpu"))]
    assert torch.equal(got, expected)


def test_the_package_does_not_import_icl_lab():
    code = "import interventions, sys; assert not [m for m in sys.modules if m.startswith('icl_lab')]"
    subprocess.run([sys.executable, "-c", code], check=True)
    # nor lazily, inside a function
    for path in Path(interventions.__file__).parent.rglob("*.py"):  # the subpackages too
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not any(m.split(".")[0] == "icl_lab" for m in modules), (path.name, modules)
