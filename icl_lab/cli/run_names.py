"""Default run folder names that say what differs from the preset (W&B-style).

`icl-lab train modular --set op=mul` goes to `runs/modular-cpu-op=mul-seed0`, not to the folder
of `icl-lab train modular` (`runs/modular-cpu-seed0`), so commands that differ never refuse each
other with "already exists", and the same command again names the same folder (so `--overwrite`
and `icl-lab resume` find it). The digest is each `--set` item as `name=value` (the last part of
the key, the value as typed; a key given twice counts once, its last value), sorted by key,
then the stems of the `--intervention` files in their order; characters a file name should not
hold become `_`, and a digest over MAX_DIGEST characters keeps its start and a hash of the
whole (`...-h1a2b3c`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

MAX_DIGEST = 40
UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")  # what may stay in a folder name on every OS


def set_items(pairs: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """`--set` items as `name=value` sorted by key; keys in `skip` (said elsewhere in the
    name, e.g. `seed`) are left out. Items are already checked (train.parse_sets)."""
    last: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        last[key.strip()] = value.strip()
    skipped = set(skip)
    return [f"{key.rpartition('.')[2]}={value}" for key, value in sorted(last.items()) if key not in skipped]


def digest(items: Iterable[str]) -> str:
    """The items joined with `-`, made safe for a folder name, and shortened with a hash of
    the whole when longer than MAX_DIGEST."""
    text = UNSAFE.sub("_", "-".join(items))
    if len(text) <= MAX_DIGEST:
        return text
    return f"{text[:MAX_DIGEST - 8]}-h{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def run_name(prefix: str, items: Iterable[str], suffix: str = "") -> str:
    """`prefix-digest-suffix` (parts left out when empty): e.g. run_name("modular-cpu",
    ["op=mul"], "seed0") == "modular-cpu-op=mul-seed0"."""
    return "-".join(part for part in (prefix, digest(items), suffix) if part)


def intervention_stems(paths: Iterable[str]) -> list[str]:
    return [Path(path).stem for path in paths]
