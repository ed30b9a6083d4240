"""The explorer's pages, one module each, and the table from page name to the function that
draws it. Every page function takes one PageContext (context.py).

(Not named `pages/`: a folder of that name beside the main script is Streamlit's automatic
multipage app, which would list each module as a page of its own in the sidebar.)
"""

from __future__ import annotations

from collections.abc import Callable

from . import ablations, attention, clamps, grokking, phase_changes, runs, sweeps
from .context import PageContext, find_runs, find_tables, read_runs

PAGES: dict[str, Callable[[PageContext], None]] = {
    "Runs": runs.draw,
    "Phase changes": phase_changes.draw,
    "Ablations": ablations.draw,
    "Attention patterns": attention.draw,
    "Grokking & RFM": grokking.draw,
    "Sweeps": sweeps.draw,
    "Clamp conditions": clamps.draw,
}

__all__ = ["PAGES", "PageContext", "find_runs", "find_tables", "read_runs"]
