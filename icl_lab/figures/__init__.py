"""Paper figures as PNG and SVG, drawn with the explorer's own Altair charts
(`icl_lab.explore.charts`) from the run store, so a figure and its app page cannot disagree.

    from icl_lab import figures
    chart = figures.nanda_figure(Path("runs/modular-cpu"))   # Nanda et al. 2023, Fig. 7's layout
    png, svg = figures.save_figure(chart, Path("runs/modular-cpu-nanda"))

One module per paper layout: singh (loss against sequences, one curve per condition, ln 2
marked), reddy (ICL and IWL heatmaps over K × B), nanda (train/test, restricted and excluded
loss, s₁ and s₂), rfm (accuracy and circulant deviation against iteration), antigrokking
(accuracy and HTSR α against steps, with and without weight decay), transience (the strategy
probes against steps, one panel per condition); runs (any runs' curves,
`icl-lab plot`); files (save_figure: PNG and SVG through vl-convert, atomic writes).
"""

from icl_lab.figures.antigrokking import anti_grokking_figure
from icl_lab.figures.files import FORMATS, save_figure
from icl_lab.figures.nanda import NANDA_LOSSES, nanda_figure
from icl_lab.figures.reddy import reddy_figure
from icl_lab.figures.rfm import rfm_figure
from icl_lab.figures.runs import grouped_curves, read_runs, runs_figure
from icl_lab.figures.singh import singh_figure
from icl_lab.figures.transience import transience_figure

__all__ = [
    "FORMATS",
    "NANDA_LOSSES",
    "anti_grokking_figure",
    "grouped_curves",
    "nanda_figure",
    "read_runs",
    "reddy_figure",
    "rfm_figure",
    "runs_figure",
    "save_figure",
    "singh_figure",
    "transience_figure",
]
