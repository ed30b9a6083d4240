"""What the explorer app shows, computed from the run store alone (no Streamlit here).

    from icl_lab import explore
    infos = explore.scan_runs("runs")                  # RunInfo per run directory
    curves = explore.load_curves(infos)               # step, metric, value, run, condition
    kept, _ = explore.one_run_per_seed(infos)         # a repeated seed counts once (the newest run)
    bands = explore.condition_bands(curves)           # mean ± sd over seeds, clipped to each metric's range
    explore.tables.find_tables("runs")                # sweep and experiment tables

Modules, one job each:
- catalogue: scan a root for runs, read each into a RunInfo, the Runs page's table;
- declarations: what a run's task (or RFM) declares: x axis, milestones, capabilities;
- curves: curves of several runs, metric families, bands over seeds, log axes, marks;
- checkpoints: a run at one checkpoint: attention patterns, an RFM feature matrix;
- colour_ranges: heatmap colour domains;
- tables: ablation, sweep and clamp-experiment tables.
"""

from icl_lab.explore import tables
from icl_lab.explore.catalogue import (
    DEFAULT_ROOT_ENV,
    HEADLINE_ACCURACIES,
    HEADLINE_LOSSES,
    SCAN_MAX_DEPTH,
    SCAN_MAX_DIRS,
    RunInfo,
    condition_labels,
    default_comparison,
    default_root,
    describe_interventions,
    find_runs,
    headline,
    main_task,
    read_run,
    run_stamp,
    runs_table,
    scan_runs,
    varying_settings,
)
from icl_lab.explore.checkpoints import attention_patterns, checkpoints, eval_set_sizes, feature_labels, feature_matrix
from icl_lab.explore.colour_ranges import delta_domain, robust_range
from icl_lab.explore.curves import (
    CURVE_SCHEMA,
    HEAD_SCORES,
    condition_bands,
    decade_ticks,
    default_panels,
    for_log_axes,
    fourier_spectrum,
    head_scores,
    load_curves,
    metric_families,
    metric_family,
    metric_names,
    metric_range,
    milestone_marks,
    one_run_per_seed,
    transition_marks,
)
from icl_lab.explore.declarations import Declarations, declarations_of

__all__ = [
    "CURVE_SCHEMA",
    "DEFAULT_ROOT_ENV",
    "HEADLINE_ACCURACIES",
    "HEADLINE_LOSSES",
    "HEAD_SCORES",
    "SCAN_MAX_DEPTH",
    "SCAN_MAX_DIRS",
    "Declarations",
    "RunInfo",
    "attention_patterns",
    "checkpoints",
    "condition_bands",
    "condition_labels",
    "decade_ticks",
    "default_comparison",
    "declarations_of",
    "default_panels",
    "default_root",
    "delta_domain",
    "describe_interventions",
    "eval_set_sizes",
    "feature_labels",
    "feature_matrix",
    "find_runs",
    "for_log_axes",
    "fourier_spectrum",
    "head_scores",
    "headline",
    "main_task",
    "load_curves",
    "metric_families",
    "metric_family",
    "metric_names",
    "metric_range",
    "milestone_marks",
    "one_run_per_seed",
    "read_run",
    "robust_range",
    "run_stamp",
    "runs_table",
    "scan_runs",
    "tables",
    "transition_marks",
    "varying_settings",
]
