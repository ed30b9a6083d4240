"""icl-lab explorer: `streamlit run apps/explore.py`.

Reads the run store only (runs directory chosen in the sidebar; default $ICL_LAB_RUNS or
runs/). Pages (apps/explorer_pages/, one module each): Runs, Phase changes, Ablations,
Attention patterns, Grokking & RFM, Sweeps, Clamp conditions.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # apps/explorer_pages, however the app is started
from explorer_pages import PAGES, PageContext, find_runs, find_tables, read_runs  # noqa: E402

from icl_lab import explore  # noqa: E402

st.set_page_config(page_title="icl-lab explorer", layout="wide")


def main() -> None:
    st.sidebar.title("icl-lab explorer")
    root = st.sidebar.text_input("runs directory", explore.default_root(), key="root")
    names = list(PAGES)
    asked = st.query_params.get("page", names[0])  # pages are linkable: ?page=Phase+changes
    page = st.sidebar.radio("page", names, index=names.index(asked) if asked in names else 0, key="page")
    if st.sidebar.button("rescan for runs", key="rescan"):
        find_runs.clear()
        find_tables.clear()
    st.sidebar.caption(f"Runs are looked for at most {explore.SCAN_MAX_DEPTH} folders below this directory.")
    if not Path(root).exists():
        st.warning(f"The runs directory {root} does not exist. Train a run (`icl-lab train bursty`) or choose another directory.")
        return
    run_dirs, gave_up = find_runs(root)
    if gave_up:
        st.error(gave_up)
        return
    stamp = explore.run_stamp([Path(d) for d in run_dirs])
    infos = read_runs(root, tuple(run_dirs), stamp)
    if not infos:
        st.info(f"No runs in {root} yet. Train one with `icl-lab train bursty --out {root}/first`.")
        return
    context = PageContext(root=root, infos=infos, stamp=stamp, runs_table=explore.runs_table(infos))
    try:
        PAGES[page](context)
    except Exception as err:  # a page must explain, not crash: the message here, the traceback in the console
        traceback.print_exc()
        st.error(f"This page could not be drawn from {root}: {type(err).__name__}: {err}")


main()
