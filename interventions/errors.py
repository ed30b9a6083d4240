"""User-facing configuration errors, shared with the lab (`icl_lab.config` re-exports these)."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A user-facing configuration error: names the bad value and the valid choices."""


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """The few valid names closest to a mistyped one (for error messages)."""
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.5)


def did_you_mean(name: str, choices: list[str]) -> str:
    near = closest(name, choices)
    return f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
