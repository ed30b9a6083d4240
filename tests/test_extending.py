"""docs/extending.md: every worked example runs, and none touches more than three lab files."""

import importlib
import re
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
def test_example_runs(title, registries, tmp_path, capsys):
    """New files become modules; edits to existing files run in that module's namespace
    (with the new modules' names imported, as the edit's import line does); then the check."""
    new_names: dict = {}
    for file, code in examples()[title]:
        if file == "check":
            exec(compile(code, f"extending.md:{title}", "exec"), {"tmp": tmp_path, "capsys": capsys})
        elif not (ROOT / file).exists():
            name = module_name(file)
            module = types.ModuleType(name)
            module.__file__ = str(ROOT / file)
            sys.modules[name] = module
            exec(compile(code, file, "exec"), module.__dict__)
            parent, _, short = name.rpartition(".")
            setattr(importlib.import_module(parent), short, module)
            new_names[short] = module
            new_names.update({k: v for k, v in vars(module).items() if getattr(v, "__module__", None) == name})
        else:
            namespace = {**vars(importlib.import_module(module_name(file))), **new_names}
            exec(compile(code, file, "exec"), namespace)
