"""Is the run in a directory the run wanted? The one comparison of a stored config with a wanted one.

    check_stored_config(run_dir, stored=run_config_of(run_dir).to_dict(), wanted=config.to_dict(),
                        doing="cannot resume it")

Used wherever a run is kept, resumed or continued instead of trained afresh (train's resume,
the grid policy of sweeps and experiments, the RFM experiment): a run trained with another
config must never be mixed into a table, nor continued as if it were the one asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icl_lab.config import ConfigError

SHOWN = 4  # differing keys named in the message


def config_differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """Each dotted key whose value differs, as "train.steps (stored 300, wanted 400)"; nested
    dicts are compared key by key, so the message names the leaf that differs."""
    differences = []
    for key in sorted(set(stored) | set(wanted), key=str):
        ours, theirs = stored.get(key), wanted.get(key)
        if ours == theirs:
            continue
        if isinstance(ours, dict) and isinstance(theirs, dict):
            differences += config_differences(ours, theirs, f"{prefix}{key}.")
        else:
            differences.append(f"{prefix}{key} (stored {ours!r}, wanted {theirs!r})")
    return differences


def check_stored_config(run_dir: str | Path, stored: dict[str, Any], wanted: dict[str, Any], doing: str) -> None:
    """Refuse (ConfigError, one line naming the run and the differing keys) a run whose stored
    config is not the wanted one; `doing` says what was refused, e.g. "cannot resume it"."""
    differences = config_differences(stored, wanted)
    if differences:
        more = f" and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
        raise ConfigError(f"{run_dir}: its stored config differs in {', '.join(differences[:SHOWN])}{more}; {doing}")
