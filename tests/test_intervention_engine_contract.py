"""The engine's contract with the rest of a model's users: where its hooks run among theirs,
how a target name is owned, and the state it saves with a checkpoint."""

import pytest
import torch

from icl_lab import BurstyConfig, BurstyTask, ModelConfig, build_model
from icl_lab.train import engine_state, restore_engine_state
from interventions import ConfigError, Intervention, InterventionEngine, Target, describe_targets, register, target_names
from interventions.targets import TARGET_CLASSES
from interventions.targets.values import Zero

PATTERN = "blocks.1.attn.hook_pattern"
RESID = "blocks.0.hook_resid_post"


@pytest.fixture
def lab():
    """(model, task, batch): a 2-layer, 2-head model on a small bursty task."""
    task = BurstyTask(BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64), seed=0)
    model = build_model(ModelConfig(n_layers=2, n_heads=2, d_model=16), task.io, seed=0, device="cpu")
    return model, task, task.sample_batch(32, torch.Generator().manual_seed(1))


def seen_by(seen):
    """A forward hook that keeps a copy of each activation it sees in `seen`."""

    def keep(act, hook):
        seen.append(act.detach().clone())
        return act

    return keep


# -- hook order ---------------------------------------------------------------------------


def test_a_hook_added_after_the_engine_sees_the_clamp_and_one_added_before_does_not(lab):
    """Whatever the step the spec switches on at, a hook added after the engine was built
    sees the clamped pattern (the task's ideal one), a hook added before sees the model's own."""
    model, task, batch = lab
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.inputs, batch.positions, names=[PATTERN], batch=batch)
    plain = cache[PATTERN]
    before, after = [], []
    point = model.hook_point(PATTERN)
    point.add_hook(seen_by(before), dir="fwd", is_permanent=True)
    spec = Intervention(hook=PATTERN, heads=(1,), query_positions="query", target="induction", steps=(2, -1))
    engine = InterventionEngine(model, task, [spec])
    before.clear()  # the engine's own dry runs while it checked the spec
    point.add_hook(seen_by(after), dir="fwd", is_permanent=True)
    try:
        with torch.no_grad():
            engine.set_step(0, "train")  # the spec is off: both see the model's pattern
            model.forward_batch(batch)
            engine.set_step(2, "train")  # on from here
            model.forward_batch(batch)
    finally:
        engine.close()
        point.remove_hooks("fwd", including_permanent=True)
    ideal, defined = task.ideal_attention("induction", batch)  # [batch, q, k], [batch, q]
    query = batch.inputs.shape[1] - 1
    rows = defined[:, query]
    assert rows.any()
    assert torch.allclose(before[0], plain) and torch.allclose(after[0], plain)
    assert torch.allclose(before[1], plain)
    assert torch.equal(after[1][rows, 1, query], ideal[rows, query])  # clamped: head 1's query row
    assert not torch.allclose(plain[rows, 1, query], ideal[rows, query], atol=1e-2)  # the clamp changed it
    assert torch.equal(after[1][:, 0], plain[:, 0])  # head 0 untouched


def test_the_engine_adds_its_hooks_once_when_built(lab):
    model, task, batch = lab
    specs = [
        Intervention(hook=PATTERN, target="zero", steps=(3, 6), apply="train"),
        Intervention(hook=RESID, target="zero", apply="eval"),
    ]
    with InterventionEngine(model, task, specs) as engine:
        counts = lambda: (len(model.hook_point(PATTERN).fwd_hooks), len(model.hook_point(RESID).fwd_hooks))  # noqa: E731
        assert counts() == (1, 1)  # before any set_step
        for step, phase in ((0, "train"), (3, "train"), (6, "train"), (4, "eval")):
            engine.set_step(step, phase)
            model.forward_batch(batch)
            assert counts() == (1, 1), (step, phase)
        # an inactive spec's hook passes the activation through and counts no call
        assert dict(engine.calls) == {(0, PATTERN, "train"): 1, (1, RESID, "eval"): 1}
    assert counts() == (0, 0)


# -- the registry -------------------------------------------------------------------------


def test_a_taken_target_name_is_refused_with_the_module_that_owns_it():
    class AnotherZero(Target):
        name = "zero"

    with pytest.raises(ValueError, match=r"'zero' is already registered by interventions\.targets\.values\.Zero"):
        register(AnotherZero)
    assert TARGET_CLASSES["zero"] is Zero
    assert register(Zero) is Zero  # the owner itself again (a module reload) is fine

    class Nameless(Target):
        pass

    with pytest.raises(TypeError, match="Nameless.*name"):
        register(Nameless)


def test_errors_and_descriptions_list_the_registered_targets():
    saved = dict(TARGET_CLASSES)
    try:

        @register
        class Half(Target):
            """Every selected entry becomes 0.5."""

            name = "half_for_this_test"

        assert describe_targets()["half_for_this_test"] == "Every selected entry becomes 0.5."
        with pytest.raises(ConfigError) as err:
            Intervention(hook=PATTERN, target="nope")
        for name in target_names():
            assert name in str(err.value), name
    finally:
        TARGET_CLASSES.clear()
        TARGET_CLASSES.update(saved)
    assert all(describe_targets().values()), describe_targets()  # every target says what it is


# -- state --------------------------------------------------------------------------------


def test_state_dict_has_the_checkpoint_keys_and_round_trips(lab):
    model, task, batch = lab
    gen = torch.Generator().manual_seed(3)
    batches = [task.sample_batch(16, gen) for _ in range(2)]
    specs = [Intervention(hook=RESID, target="zero", apply="eval"), Intervention(hook=RESID, target="running_mean", momentum=0.5)]
    means = []
    for b in batches:
        with torch.no_grad():
            _, cache = model.run_with_cache(b.inputs, b.positions, names=[RESID], batch=b)
        means.append(cache[RESID].mean(0, keepdim=True))
    with InterventionEngine(model, task, specs) as engine, torch.no_grad():
        engine.set_step(0, "train")
        for b in batches:
            model.forward_batch(b)
        engine.set_step(0, "eval")
        model.forward_batch(batch)
        state = engine.state_dict()
    # the keys icl_lab's checkpoints (TrainingState) have always used
    assert state["intervention_calls"] == {f"1|{RESID}|train": 2, f"0|{RESID}|eval": 1, f"1|{RESID}|eval": 1}
    assert list(state["intervention_running"]) == [f"1|{RESID}"]
    assert torch.allclose(state["intervention_running"][f"1|{RESID}"], 0.5 * means[0] + 0.5 * means[1], atol=1e-6)
    assert engine_state(engine) == state
    with InterventionEngine(model, task, specs) as fresh:
        fresh.calls[(0, RESID, "train")] = 99  # replaced, not added to
        fresh.load_state_dict(state)
        assert dict(fresh.calls) == {(1, RESID, "train"): 2, (0, RESID, "eval"): 1, (1, RESID, "eval"): 1}
        assert torch.equal(fresh.running_means()[(1, RESID)], state["intervention_running"][f"1|{RESID}"])
        with pytest.raises(ValueError, match=r"'5\|x\|train'"):
            fresh.load_state_dict({"intervention_calls": {"5|x|train": 1}})


def test_a_checkpoint_written_before_state_dict_still_loads(lab):
    """A TrainingState's two fields, as the trainer wrote them before the engine owned its
    state, restore the counts and the running mean exactly."""
    model, task, _ = lab
    stored_mean = torch.randn(1, 9, 16)

    class Stored:  # the two TrainingState fields restore_engine_state reads
        intervention_calls = {f"1|{RESID}|train": 7, f"1|{RESID}|eval": 2}
        intervention_running = {f"1|{RESID}": stored_mean}

    specs = [Intervention(hook=RESID, target="zero", apply="eval"), Intervention(hook=RESID, target="running_mean")]
    with InterventionEngine(model, task, specs) as engine:
        restore_engine_state(engine, Stored)
        assert dict(engine.calls) == {(1, RESID, "train"): 7, (1, RESID, "eval"): 2}
        assert torch.equal(engine.running_means()[(1, RESID)], stored_mean)
        assert engine.call_counts() == {f"1:{RESID}@{RESID}": {"train": 7, "eval": 2}}
