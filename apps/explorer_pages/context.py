"""What every page is handed: the runs directory, the runs read from it, and the store reads
the pages share, cached by Streamlit and refreshed when a run's files change (`stamp`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import streamlit as st

from icl_lab import explore
from icl_lab import RunError

RESCAN_SECONDS = 10  # new run directories appear within this long (the rescan button: at once)


@st.cache_data(show_spinner="Looking for runs…", ttl=RESCAN_SECONDS)
def find_runs(root: str) -> tuple[list[str], str | None]:
    """(run directories under root, None), or ([], why) when the bounded scan gave up."""
    try:
        return [str(p) for p in explore.find_runs(root)], None
    except RunError as err:
        return [], str(err)


@st.cache_data(show_spinner="Looking for sweeps and experiment tables…", ttl=RESCAN_SECONDS)
def find_tables(root: str) -> tuple[dict[str, list[str]], str | None]:
    """(file name -> folders holding it, None), or ({}, why) when the bounded scan gave up."""
    try:
        return {name: [str(p) for p in folders] for name, folders in explore.tables.find_tables(root).items()}, None
    except RunError as err:
        return {}, str(err)


@st.cache_data(show_spinner=False)
def read_runs(root: str, run_dirs: tuple[str, ...], stamp: tuple[int, ...]) -> list[explore.RunInfo]:
    return [explore.read_run(Path(d), Path(root)) for d in run_dirs]


@st.cache_data(show_spinner=False)
def _eval_set_sizes(run_dir: str, stamp: tuple[int, ...]) -> dict[str, int]:
    return explore.eval_set_sizes(explore.RunInfo(path=Path(run_dir), name=run_dir))


@st.cache_data(show_spinner=False)
def _curves(_infos: list, root: str, names: tuple[str, ...], stamp: tuple[int, ...]) -> pl.DataFrame:
    return explore.load_curves(_infos)


@dataclass(frozen=True)
class PageContext:
    """root: the runs directory; infos: every run under it; stamp: changes when one of their
    files does (explore.run_stamp), keying the cached reads; runs_table: explore.runs_table(infos)."""

    root: str
    infos: list[explore.RunInfo]
    stamp: tuple[int, ...]
    runs_table: pl.DataFrame

    def curves(self, runs: list[explore.RunInfo]) -> pl.DataFrame:
        """The runs' curves (explore.load_curves), cached."""
        return _curves(runs, self.root, tuple(r.name for r in runs), self.stamp)

    def live_runs(self, runs: list[explore.RunInfo]) -> tuple[list[explore.RunInfo], pl.DataFrame]:
        """The runs read again and their curves, keyed on their own files' stamp, not the page's:
        what a live view redraws every few seconds while a run trains."""
        stamp = explore.run_stamp([r.path for r in runs])
        fresh = read_runs(self.root, tuple(str(r.path) for r in runs), stamp)
        return fresh, _curves(fresh, self.root, tuple(r.name for r in fresh), stamp)

    def eval_set_sizes(self, info: explore.RunInfo) -> dict[str, int]:
        """The run's evaluation-set sizes (explore.eval_set_sizes), cached; ConfigError as it raises."""
        return _eval_set_sizes(str(info.path), self.stamp)
