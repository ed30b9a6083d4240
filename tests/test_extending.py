"""docs/extending.md: every worked example runs, and none touches more than three lab files."""

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "extending.md").read_text()


def examples() -> dict[str, list[tuple[str, str]]]:
    """{section title: [(file or 'check', code), ...]} in the order written."""
    out = {}
    for section in re.split(r"^## ", DOC, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
        out[title] = [(re.match(r"# (?:file: (\S+)|(check))", b).group(1) or "check", b) for b in blocks]
    return out


def module_name(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


@pytest.fixture
def registries():
    """Snapshot every registry an example adds to, and restore it afterwards."""
    from icl_lab.cli import VERBS
    from icl_lab.measures import MEASURES
    from icl_lab.presets import PRESETS
    from icl_lab.tasks import TASKS
    from interventions.targets import TARGET_CLASSES

    saved = [(r, dict(r)) for r in (VERBS, MEASURES, PRESETS, TASKS, TARGET_CLASSES)]
    modules = set(sys.modules)
    yield
    for registry, copy in saved:
        registry.clear()
        registry.update(copy)
    for name in set(sys.modules) - modules:
        if name.startswith(("icl_lab.", "interventions.")):
            del sys.modules[name]


def test_the_page_has_the_four_examples():
    assert list(examples()) == ["A task", "A measure", "An intervention target", "A CLI verb"]


@pytest.mark.parametrize("title", list(examples()))
def test_example_touches_at_most_three_files(title):
    files = {f for f, _ in examples()[title] if f != "check"}
    assert 1 <= len(files) <= 3, files
    assert all((ROOT / f).parent.is_dir() for f in files)


@pytest.mark.parametrize("title", list(examples()))
def test_example_runs(title, registries):
    """New files become modules; an edit runs in its module's namespace, as if pasted at the
    file's end (with only the imports it writes); then the check, with nothing given to it."""
    for file, code in examples()[title]:
        if file == "check":
            exec(compile(code, f"extending.md:{title}", "exec"), {})
        elif not (ROOT / file).exists():
            name = module_name(file)
            module = types.ModuleType(name)
            module.__file__ = str(ROOT / file)
            sys.modules[name] = module
            exec(compile(code, file, "exec"), module.__dict__)
            parent, _, short = name.rpartition(".")
            setattr(importlib.import_module(parent), short, module)
        else:
            exec(compile(code, file, "exec"), vars(importlib.import_module(module_name(file))))


@pytest.mark.slow
@pytest.mark.parametrize("title", list(examples()))
def test_example_runs_pasted_into_a_copy_of_the_lab(title, tmp_path):
    """What a newcomer does: copy the lab, write the new files, paste each edit at the end of
    its file, and run the check in a fresh Python that imports the copy."""
    lab = tmp_path / "lab"
    for package in ("icl_lab", "interventions"):
        shutil.copytree(ROOT / package, lab / package, ignore=shutil.ignore_patterns("__pycache__"))
    for file, code in examples()[title]:
        if file != "check":
            path = lab / file
            path.write_text((path.read_text() + "\n\n" if path.exists() else "") + code)
    check = next(code for file, code in examples()[title] if file == "check")
    env = {**os.environ, "PYTHONPATH": str(lab)}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_page_names_every_capability():
    from icl_lab.tasks import CAPABILITIES

    missing = [c for c in CAPABILITIES if f"`{c}`" not in DOC]
    assert not missing, f"docs/extending.md does not name the capabilities {missing}"
