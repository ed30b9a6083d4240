"""Property-based fuzzing of the run store under every verb that reads a run (issue 27).

A finished and a stopped run are trained once; each example copies one, damages one of its
files or folders in one way, and runs one verb on it through the command line's own `main`.
The property, for every example:

- the verb exits 0 with a correct result (a run it finished is `done` with a metric row at
  every evaluation step), or exits 2 with ONE line that names the damaged run;
- nothing else: no traceback (any exception other than SystemExit fails the example), no
  other exit code;
- no code executed: a pickle planted anywhere would create a sentinel file when unpickled;
- on refusal (exit 2) no byte of the run changed (the digest of every path, its kind and its
  bytes, is the same before and after).

The damage, drawn per example: truncation, random bytes, an empty file, a valid JSON value of
the wrong shape (whole file, or one key of it), a safetensors file with a tensor of another
shape or dtype (checksums in the state record recomputed, so only the contents are wrong), a
parquet file of another schema or with rows missing, a deleted file, a folder where a file
should be and the reverse, a symlink loop, and a pickle that runs code. `ICL_LAB_FUZZ_EXAMPLES`
sets the examples per verb (CI: the default below; a longer run: e.g. 200).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from conftest import interrupt_training_at, tree_digest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from icl_lab import BurstyConfig, ModelConfig, RunConfig, TrainConfig, train
from icl_lab.cli import main
from icl_lab.presets import BURSTY_MEASURES

EXAMPLES = int(os.environ.get("ICL_LAB_FUZZ_EXAMPLES", "10"))
SENTINEL = Path(tempfile.gettempdir()) / "icl-lab-fuzz-executed"
VERBS = {
    "resume": lambda run: ["resume", str(run), "--no-progress"],
    "resume --steps": lambda run: ["resume", str(run), "--steps", "16", "--no-progress"],
    "measure": lambda run: ["measure", str(run), "--measures", "icl_accuracy", "--steps", "all", "--no-progress"],
    "ablate": lambda run: ["ablate", str(run), "--over", "heads", "--metrics", "icl_accuracy"],
    "patch": lambda run: ["patch", str(run), "--over", "layers"],
    "train --overwrite": lambda run: ["train", "pairs", "--steps", "3", "--out", str(run), "--overwrite", "--no-progress"],
}
DAMAGE = ("truncate", "random_bytes", "empty", "json_value", "json_key", "tensor", "parquet", "delete",
          "folder_for_file", "file_for_folder", "symlink_loop", "pickle")


class RunsCode:
    """Unpickling this creates SENTINEL: proof that a file was unpickled."""

    def __reduce__(self):
        return (Path.touch, (SENTINEL,))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_pristine(tmp_path_factory.mktemp("pristine"))


def make_pristine(root: Path) -> dict[str, Path]:
    """{"done": a finished run, "stopped": one stopped by Ctrl-C after its step-5 checkpoint}."""
    config = RunConfig(
        task="bursty", preset="tiny", seed=3, device="cpu", measures=BURSTY_MEASURES, track=("icl_accuracy",),
        task_config=BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64),
        model=ModelConfig(n_layers=2, n_heads=2, d_model=16),
        train=TrainConfig(steps=12, batch_size=16, eval_every=4, checkpoint_every=5),
    )
    train(config, root / "done", progress=False)
    with pytest.MonkeyPatch.context() as m:
        interrupt_training_at(m, 8)
        with pytest.raises(KeyboardInterrupt):
            train(config, root / "stopped", progress=False)
    return {"done": root / "done", "stopped": root / "stopped"}


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _recompute_state_checksums(record: Path) -> None:
    """Make a state record's sha256 entries match its files again (only the contents are wrong)."""
    try:
        data = json.loads(record.read_text())
        step = record.name.split(".")[0]
        folder = record.parent
        data["sha256"] = {"weights": hashlib.sha256((folder / f"{step}.safetensors").read_bytes()).hexdigest(),
                          "state": hashlib.sha256((folder / f"{step}.state.safetensors").read_bytes()).hexdigest()}
        record.write_text(json.dumps(data))
    except (OSError, ValueError, TypeError, KeyError):
        pass


def damage(run: Path, target: Path, kind: str, draw) -> str:
    """Damage `target` (a file or folder inside `run`) in the way `kind` names; returns a label."""
    if kind == "file_for_folder":
        folder = draw(st.sampled_from([run / "checkpoints", run / "ablations"]))
        if folder.exists():
            shutil.rmtree(folder)
        folder.write_bytes(b"not a folder")
        return f"{folder.name}/ is a file"
    if kind == "delete":
        target.unlink()
    elif kind == "folder_for_file":
        target.unlink()
        target.mkdir()
    elif kind == "symlink_loop":
        target.unlink()
        target.symlink_to(target.name)
    elif kind == "pickle":
        target.write_bytes(pickle.dumps({"state": RunsCode()}))
    elif kind == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: draw(st.integers(0, max(len(data) - 1, 0)))])
    elif kind == "random_bytes":
        target.write_bytes(draw(st.binary(max_size=64)))
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "json_value":
        target.write_text(json.dumps(draw(_json_values())))
    elif kind == "json_key":
        data = json.loads(target.read_text())
        node, keys = data, []
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            keys.append(key)
            if not isinstance(node[key], dict):
                break
            node = node[key]
        value = draw(_json_values())
        if isinstance(node, dict) and node:
            node[draw(st.sampled_from(sorted(node)))] = value
        else:
            data = value
        target.write_text(json.dumps(data))
    elif kind == "tensor":
        tensors = load_file(target)
        if tensors:
            name = draw(st.sampled_from(sorted(tensors)))
            old = tensors[name]
            change = draw(st.sampled_from(["shape", "dtype", "drop", "scalar"]))
            if change == "shape":
                tensors[name] = torch.zeros(old.numel() + 1)
            elif change == "dtype":
                tensors[name] = old.to(torch.float64 if old.dtype != torch.float64 else torch.int32)
            elif change == "drop":
                del tensors[name]
            else:
                tensors[name] = torch.tensor(7)
        save_file(tensors, target)
        if target.name.endswith(".state.safetensors") or target.parent.name == "checkpoints":
            _recompute_state_checksums(target.with_name(target.name.split(".")[0] + ".state.json"))
    elif kind == "parquet":
        frame = pl.read_parquet(target)
        if draw(st.booleans()) and frame.height:
            frame = frame.head(draw(st.integers(0, frame.height - 1)))
        else:
            frame = pl.DataFrame({"x": [1.0, 2.0]})
        frame.write_parquet(target)
    return f"{target.relative_to(run)}: {kind}"


def kinds_for(target: Path) -> list[str]:
    suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".state.safetensors") else target.suffix
    specific = {".json": ["json_value", "json_key"], ".safetensors": ["tensor"], ".state.safetensors": ["tensor"],
                ".parquet": ["parquet"]}.get(suffix, [])
    return ["truncate", "random_bytes", "empty", "delete", "folder_for_file", "file_for_folder", "symlink_loop", "pickle", *specific]


def check_verb(verb: str, pristine: dict[str, Path], data) -> None:
    which = data.draw(st.sampled_from(sorted(pristine)), label="run")
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        shutil.copytree(pristine[which], run, symlinks=True)
        files = sorted(p for p in run.rglob("*") if p.is_file() and not p.is_symlink())
        target = data.draw(st.sampled_from(files), label="file")
        kind = data.draw(st.sampled_from(kinds_for(target)), label="damage")
        label = damage(run, target, kind, data.draw)
        SENTINEL.unlink(missing_ok=True)
        before = tree_digest(run)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(VERBS[verb](run))
            except SystemExit as exit:
                code = exit.code
            except Exception as crash:  # a traceback: what the property forbids; name the damage
                where = traceback.extract_tb(crash.__traceback__)[-1]
                raise AssertionError(f"{which} run, {label}: {verb} raised a traceback, {type(crash).__name__}: {crash} "
                                     f"(at {Path(where.filename).name}:{where.lineno})") from crash
        lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith("icl-lab: skipping")]
        if isinstance(data, _RandomDraws):
            data.codes[code] += 1
        else:
            event(f"{verb}: exit {code}")
        assert not SENTINEL.exists(), f"{which} run, {label}: a pickle was unpickled"
        if code == 2:
            assert len(lines) == 1, f"{which} run, {label}: {verb} refused in {len(lines)} lines:\n{err.getvalue()}"
            assert str(run) in lines[0] or target.name in lines[0], f"{which} run, {label}: the refusal names no file: {lines[0]}"
            assert tree_digest(run) == before, f"{which} run, {label}: {verb} refused ({lines[0]}) but changed the run"
        else:
            assert code == 0, f"{which} run, {label}: {verb} exited {code}:\n{err.getvalue()}"
            if verb.startswith("resume") or verb.startswith("train"):
                check_finished(run, label, verb)


def check_finished(run: Path, label: str, verb: str) -> None:
    """A run the verb says it finished is done, with train_loss at every evaluation step."""
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done", f"{label}: {verb} exited 0 but the run is {status['state']}"
    config = json.loads((run / "config.json").read_text())
    steps, every = config["train"]["steps"], config["train"]["eval_every"]
    metrics = pl.read_parquet(run / "metrics.parquet")
    logged = set(metrics.filter(pl.col("metric") == "train_loss")["step"].to_list())
    wanted = set(range(every, steps + 1, every)) | {steps}
    assert wanted <= logged, f"{label}: {verb} exited 0 but train_loss is missing at steps {sorted(wanted - logged)}"


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
@pytest.mark.parametrize("verb", list(VERBS))
@FUZZ
@given(data=st.data())
def test_every_damaged_run_is_refused_in_one_line_or_handled(verb, pristine, data):
    check_verb(verb, pristine, data)


APP = Path(__file__).resolve().parent.parent / "apps" / "explore.py"
APP_PAGES = ("Runs", "Phase changes", "Ablations", "Attention patterns")


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_the_explorer_shows_a_damaged_run_without_an_exception(pristine, data):
    """The app over a store holding one damaged run beside a healthy one: every page draws
    (the damaged run listed as corrupt where a file could not be read), no exception."""
    from streamlit.testing.v1 import AppTest

    which = data.draw(st.sampled_from(sorted(pristine)), label="run")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        shutil.copytree(pristine["done"], root / "healthy", symlinks=True)
        run = root / "damaged"
        shutil.copytree(pristine[which], run, symlinks=True)
        files = sorted(p for p in run.rglob("*") if p.is_file() and not p.is_symlink())
        target = data.draw(st.sampled_from(files), label="file")
        label = damage(run, target, data.draw(st.sampled_from(kinds_for(target)), label="damage"), data.draw)
        SENTINEL.unlink(missing_ok=True)
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["root"] = str(root)
        at.run()
        for page in APP_PAGES:
            at.sidebar.radio(key="page").set_value(page).run()
            assert not at.exception, f"{which} run, {label}: the {page} page raised {at.exception}"
        assert not SENTINEL.exists(), f"{which} run, {label}: a pickle was unpickled"


class _RandomDraws:
    """`data.draw` outside @given, for the tally below (random draws, no shrinking)."""

    def __init__(self):
        self.codes = Counter()

    def draw(self, strategy, label=None):
        return strategy.example()


OUTCOMES = {"raised a traceback": "traceback", "was unpickled": "code executed", "refused in": "refusal of several lines", "changed the run": "bytes changed on refusal",
            "names no file": "refusal naming no file", "exited": "wrong exit code", "but the run is": "exit 0, run not done",
            "is missing at steps": "exit 0, rows lost"}


def tally(examples_per_verb: int, root: Path) -> dict[str, Counter]:
    """Random examples of every verb, counting outcomes instead of stopping at the first
    failure (the long run reported in the issue's note): python tests/test_fuzz_runs.py N."""
    import warnings

    warnings.filterwarnings("ignore")
    runs = make_pristine(root)
    counts: dict[str, Counter] = {}
    for verb in VERBS:
        counts[verb] = Counter()
        draws = _RandomDraws()
        for _ in range(examples_per_verb):
            try:
                check_verb(verb, runs, draws)
                counts[verb]["passed"] += 1
            except AssertionError as failure:
                what = next((name for key, name in OUTCOMES.items() if key in str(failure)), "assertion")
                counts[verb][what] += 1
                print(f"{verb}: {what}: {str(failure).splitlines()[0][:300]}")
            except Exception as crash:  # noqa: BLE001  (a traceback: the failure being counted)
                counts[verb]["traceback"] += 1
                print(f"{verb}: traceback {type(crash).__name__}: {str(crash).splitlines()[0][:200] if str(crash) else ''}")
        counts[verb].update({f"exit {code}": n for code, n in draws.codes.items()})
    return counts


if __name__ == "__main__":
    import sys
    import time

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = tally(int(sys.argv[1]) if len(sys.argv) > 1 else 20, Path(scratch))
    for verb, counts in result.items():
        cases = sum(v for k, v in counts.items() if not k.startswith("exit "))
        print(f"{verb:>18}: {cases} cases, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"{time.perf_counter() - started:.0f} s")
