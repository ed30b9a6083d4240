"""The registry of targets: spec `target` name -> the class that computes it.

    @register
    class Zero(Target):
        name = "zero"

A name belongs to one class: registering a second class under a taken name is refused, with
the module that owns the name in the error (re-running the same class's definition, as a
module reload does, replaces it). `describe_targets()` lists every registered target with
the first sentence of its docstring: the list that docs and error messages use, never one
written by hand.

This module imports no target class (`interventions.spec` reads the registry, and the target
classes read specs), so the package has no import cycle.
"""

from __future__ import annotations

import re
from typing import Any

TARGET_CLASSES: dict[str, Any] = {}  # name -> Target subclass (interventions.targets.base)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type) -> type:
    """Class decorator: make `cls` the target called `cls.name` in specs."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"target class {_qualified(cls)} needs a class attribute `name` (the spec's target string)")
    owner = TARGET_CLASSES.get(name)
    if owner is not None and _qualified(owner) != _qualified(cls):
        raise ValueError(
            f"target name {name!r} is already registered by {_qualified(owner)} (module {owner.__module__}); "
            f"give {_qualified(cls)} another name"
        )
    TARGET_CLASSES[name] = cls
    return cls


def target_names() -> list[str]:
    """Every registered target name, in registration order."""
    return list(TARGET_CLASSES)


def describe_targets() -> dict[str, str]:
    """{target name: the first sentence of its class docstring} for every registered target."""
    return {name: _first_sentence(cls.__doc__ or "") for name, cls in TARGET_CLASSES.items()}


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
