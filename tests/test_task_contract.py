"""The task contract: registration checks the Task protocol, capabilities decide the measures,
every registered task trains from the CLI with its default preset, and a new task needs only
its class, one registration line and a preset."""

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import icl_lab.presets as presets
import icl_lab.tasks as tasks
from icl_lab.cli import main
from icl_lab.config import ConfigError, TrainConfig
from icl_lab.measures import registry as measure_registry
from icl_lab.measures import MEASURES, expand_measures, measures_for_task, register_measure, validate_measures
from icl_lab.models import ModelConfig
from icl_lab.store import load_run
from icl_lab.tasks import CorruptedTwin, IdealAttention, OrderedInputs, PositionRoles, ProbeSet
from icl_lab.tasks import ModelIO, Task, TaskBatch, register_task, task_capabilities, task_names
from icl_lab.tasks.base import TASK_MEMBERS, Milestone


# A complete task in the new design: its config, its class (what Task lists), nothing else.
@dataclass(frozen=True)
class CountConfig:
    length: int = 6  # tokens per sequence, each in 0..vocab-1
    vocab: int = 4


class CountTask:
    """How many of the tokens are 0 (an answer in 0..length)."""

    name, input_kind, eval_set_names = "count", "tokens", ("train", "test")
    milestones, transition_readings, x_axis = (), {}, "training step"

    def __init__(self, config, seed, device="cpu"):
        self.config, self.device = config, torch.device(device)
        gen = self.make_generator(seed)
        self.fixed = {s: self.sample_batch(256, gen) for s in self.eval_set_names}

    @property
    def io(self):
        n = self.config.length
        return ModelIO(self.input_kind, n_ctx=n, n_outputs=n + 1, seq_len=n, d_vocab=self.config.vocab)

    def make_generator(self, seed):
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample_batch(self, batch_size, gen):
        n = self.config.length
        x = torch.randint(0, self.config.vocab, (batch_size, n), generator=gen, device=self.device)
        return TaskBatch(inputs=x, positions=torch.arange(n, device=self.device).expand(batch_size, n), targets=(x == 0).sum(1))

    def eval_sets(self, size=None):
        return self.fixed

    def loss(self, logits, batch):
        return F.cross_entropy(logits, batch.targets)

    def token_labels(self, batch, example):
        return [str(int(t)) for t in batch.inputs[example]]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test stay in it."""
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    monkeypatch.setattr(presets, "PRESETS", {t: dict(p) for t, p in presets.PRESETS.items()})


def without(member: str) -> type:
    """CountTask's members minus one, as a new class."""
    body = {k: v for k, v in vars(CountTask).items() if not k.startswith("__") or k == "__init__"}
    body.pop(member)
    return type("Incomplete", (), body)


@pytest.mark.parametrize("member", TASK_MEMBERS)
def test_registering_a_task_without_a_required_member_names_it(member, scratch_registry):
    assert set(TASK_MEMBERS) == {"name", "input_kind", "eval_set_names", "io", "make_generator", "sample_batch", "eval_sets", "loss",
                                 "milestones", "transition_readings", "x_axis", "token_labels"}
    with pytest.raises(TypeError, match=rf"lacks {member}, required by the Task protocol"):
        register_task("count", CountConfig, without(member), default_preset="small")
    assert "count" not in tasks.TASKS


@pytest.mark.parametrize(
    "attrs, words",
    [
        ({"name": "other"}, ["'count'", "'other'"]),
        ({"input_kind": "pixels"}, ["pixels", "tokens", "continuous", "features"]),
        ({"eval_set_names": ()}, ["eval_set_names"]),
        ({"probe_set": "valid"}, ["probe_set='valid'", "train, test"]),
        ({"provides": ("group_structure",)}, ["group_structure", "modular_arithmetic"]),
        ({"milestones": (("test_accuracy", 0.9),)}, ["milestones", "Milestone"]),
        ({"milestones": [Milestone("test_accuracy", 0.9, "s")]}, ["milestones", "tuple"]),
        ({"transition_readings": {"train_loss": "down"}}, ["transition_readings", "Reading"]),
        ({"x_axis": ""}, ["x_axis"]),
    ],
)
def test_registration_refuses_a_malformed_task_naming_the_bad_value(attrs, words, scratch_registry):
    bad = type("Bad", (CountTask,), attrs)
    with pytest.raises(TypeError) as err:
        register_task("count", CountConfig, bad, default_preset="small")
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_registration_refuses_a_bad_constructor_and_a_second_class_under_one_name(scratch_registry):
    class NoSeed(CountTask):
        def __init__(self, config, device="cpu"):
            super().__init__(config, 0, device)

    with pytest.raises(TypeError, match=r"constructor must be \(config, seed, device\)"):
        register_task("count", CountConfig, NoSeed, default_preset="small")
    with pytest.raises(ValueError, match="already registered to BurstyTask by icl_lab.tasks.bursty"):
        register_task("bursty", CountConfig, type("bursty", (CountTask,), {"name": "bursty"}), default_preset="small")


SMALL_CONFIGS = {
    "bursty": tasks.BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=16),
    "modular": tasks.ModularTaskConfig(p=7),
    "digits": tasks.DigitsConfig(train_size=100, test_size=50),
    "pairs": tasks.PairsConfig(num_classes=6, held_out_classes=4, dim=15, eval_size=16),
}
# What each task offers, written out (the capability protocols it implements by its methods,
# the model family of its inputs, its declared data contracts).
CAPABILITIES = {
    "bursty": {"position_roles", "ideal_attention", "corrupted_twin", "probe_set", "ordered_inputs", "transformer"},
    "modular": {"probe_set", "ordered_inputs", "modular_arithmetic", "transformer"},
    "digits": {"probe_set", "mlp"},
    "pairs": {"position_roles", "ideal_attention", "probe_set", "ordered_inputs", "transformer"},
}


def test_every_registered_task_satisfies_the_protocol():
    assert task_names() == sorted(SMALL_CONFIGS)
    protocols = {"position_roles": PositionRoles, "ideal_attention": IdealAttention, "corrupted_twin": CorruptedTwin,
                 "probe_set": ProbeSet, "ordered_inputs": OrderedInputs}
    for name in task_names():
        task = tasks.make_task(name, SMALL_CONFIGS[name], seed=0, device="cpu")
        assert isinstance(task, Task)
        assert task.name == name and task.io.input_kind == type(task).input_kind
        sets = task.eval_sets()
        assert tuple(sets) == task.eval_set_names and all(isinstance(b, TaskBatch) for b in sets.values())
        batch = task.sample_batch(8, task.make_generator(1))
        logits = torch.zeros(batch.size, task.io.n_outputs)
        assert task.loss(logits, batch).shape == ()
        assert task_capabilities(name) == CAPABILITIES[name] == task_capabilities(task)
        for cap, proto in protocols.items():
            assert isinstance(task, proto) == (cap in CAPABILITIES[name]), (name, cap)
        assert presets.default_preset(name) in presets.PRESETS[name]


def test_make_task_refuses_another_tasks_config():
    with pytest.raises(ConfigError, match="needs a DigitsConfig, got ModularTaskConfig"):
        tasks.make_task("digits", tasks.ModularTaskConfig(), seed=0, device="cpu")


# The measures each task got from its explicit task list before capabilities decided them,
# plus the measures added since to every transformer task (`llc`, issue 22) and the strategy
# probes of the tasks with `flip` and `ciwl` sets (issue 23).
NEW_TRANSFORMER_MEASURES = ["llc"]
OLD_MEASURES = {
    "bursty": [
        "icl_accuracy", "iwl_accuracy", "label_swap_accuracy", "flip_accuracy", "ciwl_accuracy", "eval_loss", "context_label_accuracy",
        "induction_score", "previous_token_score", "embedding_uniformity", "local_complexity",
        "activation_sparsity", "weight_entropy", "local_circuit_complexity", "htsr",
        "mutual_information", "weight_norm", *NEW_TRANSFORMER_MEASURES,
    ],
    "modular": [
        "modular_accuracy", "modular_loss", "fourier_embedding", "gini_neuron_logit",
        "restricted_excluded_loss", "weight_norm", "nfa", "embedding_uniformity", "local_complexity",
        "activation_sparsity", "weight_entropy", "local_circuit_complexity", "htsr", "mutual_information",
        *NEW_TRANSFORMER_MEASURES,
    ],
    "digits": [
        "classification_accuracy", "classification_loss", "local_complexity", "activation_sparsity",
        "weight_entropy", "local_circuit_complexity", "htsr", "mutual_information", "weight_norm",
    ],
}
OLD_PROGRESS = {
    "bursty": ["htsr", "activation_sparsity", "weight_entropy", "local_circuit_complexity", "embedding_uniformity", "mutual_information", "local_complexity"],
    "modular": ["htsr", "activation_sparsity", "weight_entropy", "local_circuit_complexity", "embedding_uniformity", "mutual_information", "local_complexity"],
    "digits": ["htsr", "activation_sparsity", "weight_entropy", "local_circuit_complexity", "mutual_information", "local_complexity"],
}


def lab_measures(task: str) -> list[str]:
    """The measures the task gets among those the lab's own modules register (a user's measure,
    registered from their module, may apply too without changing these)."""
    return [name for name in measures_for_task(task) if measure_registry.MEASURES[name].fn.__module__.startswith("icl_lab.")]


@pytest.mark.parametrize("task", sorted(OLD_MEASURES))
def test_capabilities_select_the_measures_each_task_had(task):
    assert sorted(lab_measures(task)) == sorted(OLD_MEASURES[task])
    assert expand_measures(["progress", "htsr"], task) == OLD_PROGRESS[task]


def test_a_users_measure_joins_the_tasks_measures_and_a_taken_name_is_refused(monkeypatch):
    registry = measure_registry
    monkeypatch.setattr(registry, "MEASURES", dict(MEASURES))

    def query_norm(model, data):
        return {"query_norm": data.batches["icl"].inputs[:, -1].norm(dim=-1).mean()}

    query_norm.__module__ = "my_lab.measures"  # as if defined in a user's module
    register_measure("query_norm", eval_sets=("icl",))(query_norm)
    assert "query_norm" in measures_for_task("bursty") and "query_norm" in measures_for_task("pairs")
    assert sorted(lab_measures("bursty")) == sorted(OLD_MEASURES["bursty"])  # the pinned list still holds
    with pytest.raises(ValueError, match="measure 'icl_accuracy' is already registered by icl_lab.measures.bursty"):
        register_measure("icl_accuracy", eval_sets=("icl",))(query_norm)
    with pytest.raises(ValueError, match="'query_norm' is already registered by my_lab.measures"):
        register_measure("query_norm")(lambda model, data: {})
    assert registry.MEASURES["icl_accuracy"].fn.__module__ == "icl_lab.measures.bursty"


def test_a_measure_the_task_cannot_support_is_refused_with_the_reason_and_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        validate_measures(["induction_score"], "digits")
    message = str(err.value)
    for word in ["'induction_score'", "'digits'", "capability 'transformer'", "capability 'ideal_attention'", "eval set 'icl'", "classification_accuracy", "htsr"]:
        assert word in message, (word, message)
    with pytest.raises(ConfigError, match="unknown measure 'modular_acuracy'.*Did you mean 'modular_accuracy'"):
        validate_measures(["modular_acuracy"], "modular")


def test_a_measure_needing_an_unknown_capability_is_refused():
    with pytest.raises(ValueError, match="'tokens_embedding'.*transformer"):
        register_measure("bogus", needs=("tokens_embedding",))


def test_post_run_steps_are_selected_by_capability_and_a_taken_name_is_refused(monkeypatch):
    from icl_lab.post_run import POST_RUN_STEPS, post_run_steps_for, register_post_run_step
    from icl_lab.post_run import registry as post_run_registry

    # the lab's own: the final-key-frequency losses, for tasks that provide modular_arithmetic
    assert {t: post_run_steps_for(t) for t in task_names()} == {"bursty": [], "digits": [], "modular": ["final_key_losses"], "pairs": []}
    assert POST_RUN_STEPS["final_key_losses"].module == "icl_lab.grokking.posthoc"
    monkeypatch.setattr(post_run_registry, "POST_RUN_STEPS", dict(POST_RUN_STEPS))

    @register_post_run_step("count_checkpoints", needs=("probe_set",))
    def count_checkpoints(run_dir, device):
        return {"checkpoints": len(list((run_dir / "checkpoints").glob("step_*.safetensors")))}

    assert post_run_steps_for("digits") == ["count_checkpoints"]
    assert post_run_steps_for("modular") == ["final_key_losses", "count_checkpoints"]
    with pytest.raises(ValueError, match="'final_key_losses' is already registered by icl_lab.grokking.posthoc"):
        register_post_run_step("final_key_losses")(count_checkpoints)
    with pytest.raises(ValueError, match="unknown capabilities.*'after_training'"):
        register_post_run_step("bogus", needs=("after_training",))


def test_modular_training_runs_the_post_run_hook(tmp_path):
    from icl_lab.train import train

    config = presets.get_preset("modular", None).config.with_overrides({
        "task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 10, "train.eval_every": 5,
        "train.checkpoint_every": 5, "device": "cpu",
    })
    result = train(config, tmp_path / "run", progress=False)
    keys = result.summary["final_key_frequencies"]
    assert keys and all(1 <= k <= 5 for k in keys)  # frequencies of Z_11: 1..5
    run = load_run(tmp_path / "run")
    for metric in ("restricted_loss_final_keys", "excluded_loss_final_keys"):
        assert run.curve(metric)["step"].to_list() == [0, 5, 10]
    # `icl-lab measure --post-run` runs the steps again on the stored run, under its lock
    import json

    summary_path = tmp_path / "run" / "summary.json"
    summary_path.write_text(json.dumps({k: v for k, v in json.loads(summary_path.read_text()).items() if k != "final_key_frequencies"}))
    assert main(["measure", str(tmp_path / "run"), "--measures", "weight_norm", "--post-run", "--no-progress"]) == 0
    assert json.loads(summary_path.read_text())["final_key_frequencies"] == keys


@pytest.mark.parametrize("task", task_names())
def test_cli_trains_every_task_with_its_default_preset(task, tmp_path):
    # digits: every test image is 797, 200 are plenty here; bursty: 1,024 sequences per set
    shrink = {"digits": ["--set", "task.test_size=200"], "bursty": ["--set", "task.eval_size=128"]}.get(task, [])
    code = main(["train", task, "--steps", "2", "--out", str(tmp_path / task), "--no-progress", "--device", "cpu", *shrink])
    assert code == 0
    run = load_run(tmp_path / task)
    assert run.config["preset"] == presets.default_preset(task)
    assert run.status["state"] == "done"


def test_a_new_task_needs_its_class_one_registration_and_a_preset(tmp_path, scratch_registry):
    register_task("count", CountConfig, CountTask, default_preset="small")
    presets.register_preset(
        "count", "small", "count the zeros among 6 tokens", CountConfig(), ModelConfig(n_layers=1, n_heads=2, d_model=32),
        TrainConfig(steps=100, batch_size=64, lr=1e-2, eval_every=50, checkpoint_every=100),
        measures=("classification_accuracy", "progress"), track=("test_accuracy",),
    )
    # the measures follow from its eval sets (train, test) and capabilities (a transformer, no probe set)
    assert lab_measures("count") == ["classification_accuracy", "classification_loss", "weight_entropy", "htsr", "llc", "weight_norm"]
    assert main(["train", "count", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]) == 0
    run = load_run(tmp_path / "run")
    assert run.config["preset"] == "small"
    assert {"train_accuracy", "test_accuracy", "alpha_mean", "weight_entropy"} <= set(run.metrics["metric"].to_list())
    final = run.curve("test_accuracy")["value"].to_list()[-1]
    assert final > 0.6  # the commonest count (1 of 6) is right 36% of the time


def test_milestones_and_readings_are_declared_by_the_tasks():
    """Generic code reads these members; only modular has milestones (grokking's s₁, s₂), and
    their keys are the `first_steps` keys stored runs already have."""
    declared = {name: tasks.task_class(name).milestones for name in task_names()}
    assert {name: [(m.key, m.label) for m in ms] for name, ms in declared.items()} == {
        "bursty": [], "digits": [], "pairs": [],
        "modular": [("train_accuracy>=1", "s₁ train acc = 1"), ("test_accuracy>=0.95", "s₂ test acc ≥ 0.95")],
    }
    assert Milestone("icl_accuracy", 0.5, "half").key == "icl_accuracy>=0.5"
    assert set(tasks.PairsTask.transition_readings) == {"train_loss", "icl_accuracy"}
    assert all(tasks.task_class(n).transition_readings == {} for n in ("bursty", "modular", "digits"))
    assert all(tasks.task_class(n).x_axis == "training step" for n in task_names())


def test_token_labels_name_each_position_of_the_chosen_example():
    bursty = tasks.make_task("bursty", SMALL_CONFIGS["bursty"], seed=0, device="cpu")
    batch = bursty.sample_batch(3, bursty.make_generator(0))
    classes, labels = batch.context_classes[2].tolist(), batch.context_labels[2].tolist()
    expected = [x for i in range(4) for x in (f"x{i + 1} c{classes[i]}", f"ℓ{i + 1}={labels[i]}")]
    assert bursty.token_labels(batch, 2) == expected + [f"query c{int(batch.query_class[2])}"]
    assert len(expected) + 1 == batch.inputs.shape[1]
    modular = tasks.make_task("modular", SMALL_CONFIGS["modular"], seed=0, device="cpu")
    grid = modular.eval_sets()["grid"]  # row-major (a, b): example 7·3 + 4 is a=3, b=4
    assert modular.token_labels(grid, 7 * 3 + 4) == ["a=3", "b=4", "query ="]
    pairs = tasks.make_task("pairs", SMALL_CONFIGS["pairs"], seed=0, device="cpu")
    assert pairs.token_labels(pairs.sample_batch(2, pairs.make_generator(0)), 1) == ["0", "1", "2", "3", "4"]
    digits = tasks.make_task("digits", SMALL_CONFIGS["digits"], seed=0, device="cpu")
    assert digits.token_labels(digits.eval_sets()["test"], 0) == ["0"]
