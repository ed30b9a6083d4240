"""Widgets the pages share: the runs to compare, one run or one step picked, a choice kept
valid when what is offered changes, a table folder picked, downloads."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import streamlit as st

from icl_lab import RunError, explore

from .context import find_tables


def download(frame: pl.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet download buttons for `frame`, side by side."""
    left, right = st.columns(2)
    left.download_button(f"{name}.csv", frame.write_csv().encode(), file_name=f"{name}.csv", mime="text/csv", key=f"csv-{key}")
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    right.download_button(f"{name}.parquet", buffer.getvalue(), file_name=f"{name}.parquet", key=f"pq-{key}")


def selected_runs(infos) -> list:
    """The runs to compare: the sidebar's choice, kept (as "compare") while pages without it are shown."""
    names = [i.name for i in infos]
    if "selected" not in st.session_state:  # a first view: the main task's runs, plain and clamped alike
        st.session_state["selected"] = [n for n in st.session_state.get("compare") or explore.default_comparison(infos) if n in names]
    chosen = st.sidebar.multiselect("runs to compare", names, key="selected")
    st.session_state["compare"] = chosen
    return [i for i in infos if i.name in chosen]


def compare(names: list[str], what: str) -> None:
    """Put these runs in the comparison the other pages draw (Phase changes starts from it)."""
    st.session_state["compare"] = names
    st.success(f"Comparing {len(names)} runs ({what}) on Phase changes: {', '.join(names)}")


def keep_choice(key: str, options: list, default) -> None:
    """Set a one-value widget's state to `default` when what it holds is not offered (any more)
    (a step of another run, a task no longer selected). Called before the widget is drawn."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def keep_valid(key: str, allowed: list, default: list) -> list:
    """A multiselect's value: what the session holds, minus what is no longer offered (a stale
    choice from another task), else the default. Set before the widget is drawn."""
    kept = [v for v in st.session_state.get(key, default) if v in allowed]
    st.session_state[key] = kept
    return kept


def step_slider(label: str, steps: list[int], key: str, default: int, container=st) -> int:
    """A checkpoint step among `steps`; `default` when the session's step is not one of them."""
    keep_choice(key, steps, default)
    return int(container.select_slider(label, steps, key=key))


def one_run(infos, label: str, key: str, predicate=None):
    """A run picked from those fitting `predicate`; the runs picked for comparison come first."""
    options = [i for i in infos if predicate is None or predicate(i)]
    if not options:
        return None
    chosen = st.session_state.get("compare") or []
    options.sort(key=lambda i: i.name not in chosen)
    names = [i.name for i in options]
    name = st.selectbox(label, names, key=key)
    return options[names.index(name)]


def pick_table(root: str, file: str, label: str, key: str, read, hint: str) -> tuple[Path, pl.DataFrame] | None:
    """(folder, read(folder)) for a folder under root holding `file`, picked by the user; None,
    with a message, when there is none or its table cannot be read."""
    found, gave_up = find_tables(root)
    if gave_up:
        st.error(gave_up)
        return None
    folders = {str(Path(f).relative_to(root)): Path(f) for f in found.get(file, [])}
    if not folders:
        st.info(f"No {label} under {root} (a folder holding {file}). {hint}")
        return None
    folder = folders[st.selectbox(label, list(folders), key=key)]
    try:
        return folder, read(folder)
    except RunError as err:
        st.error(f"This {label} cannot be shown: {err}")
        return None
