"""Figures (icl_lab/figures) and `icl-lab plot`: the data each chart draws is the runs' own
metrics.parquet (read here with polars, not through the lab) or the experiment's table, the
PNG and SVG are real files with the axis titles stated in units, and bad input is refused
before anything is written."""

import math
import re

import polars as pl
import pytest

from icl_lab import figures, train
from icl_lab.cli import main
from icl_lab.presets import get_preset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rows_of(chart) -> list[dict]:
    """Every data row the chart's spec carries (Altair gathers inline data under `datasets`)."""
    return [row for rows in chart.to_dict()["datasets"].values() for row in rows]


def parquet(run_dir) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "metrics.parquet")


def check_files(png, svg, *titles):
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    text = svg.read_text()
    assert text.lstrip().startswith("<svg")
    for title in titles:
        assert title in text, title
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no temporary left


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """One tiny bursty run for the whole module (conftest's short settings; evaluations at 0, 4, 8, 12)."""
    from icl_lab import BurstyConfig, ModelConfig, RunConfig, TrainConfig
    from icl_lab.presets import BURSTY_MEASURES

    config = RunConfig(task="bursty", task_config=BurstyConfig(num_classes=64, num_labels=8, dim=15, context_pairs=4, burstiness=2, eval_size=64),
                       model=ModelConfig(n_layers=2, n_heads=2, d_model=16), train=TrainConfig(steps=12, batch_size=16, eval_every=4, checkpoint_every=0),
                       measures=BURSTY_MEASURES, seed=3, device="cpu", preset="tiny")
    run_dir = tmp_path_factory.mktemp("bursty") / "run"
    train(config, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def modular_run(tmp_path_factory):
    config = get_preset("modular", "cpu").config.with_overrides({
        "task.p": 11, "model.d_model": 32, "model.d_mlp": 64, "train.steps": 60, "train.lr": 1e-2,
        "train.eval_every": 10, "train.checkpoint_every": 30, "device": "cpu",
    })
    run_dir = tmp_path_factory.mktemp("grok") / "run"
    train(config, run_dir, progress=False)
    return run_dir


def test_save_figure_writes_png_and_svg_with_the_axis_titles(tmp_path, done_run):
    chart, notes = figures.runs_figure([done_run], ["icl_accuracy", "train_loss"])
    png, svg = figures.save_figure(chart, tmp_path / "out" / "curves")
    assert (png.name, svg.name) == ("curves.png", "curves.svg") and notes == []
    check_files(png, svg, "training steps", "icl_accuracy", "train_loss")


def test_runs_figure_draws_the_runs_metrics_unchanged(done_run):
    chart, _ = figures.runs_figure([done_run], ["icl_accuracy", "train_loss"])
    drawn = {(r["metric"], r["step"], r["value"]) for r in rows_of(chart) if "value" in r and "metric" in r}
    stored = parquet(done_run).filter(pl.col("metric").is_in(["icl_accuracy", "train_loss"]))
    assert set(stored["metric"]) == {"icl_accuracy", "train_loss"} and stored["step"].n_unique() == 4  # evaluations 0, 4, 8, 12
    assert drawn == set(stored.select("metric", "step", "value").iter_rows())


@pytest.mark.slow
def test_singh_figure_is_the_seed_mean_against_sequences_with_the_plateau(tmp_path, short_config):
    runs = []
    for seed in (0, 1):
        train(short_config.with_overrides({"seed": seed}), tmp_path / f"s{seed}", progress=False)
        runs.append(tmp_path / f"s{seed}")
    chart = figures.singh_figure({"none": runs}, "train_loss", batch_size=16, level=math.log(2), level_label="ln 2",
                                 transitions={"none": 96.0})
    means = {(r["step"], round(r["mean"], 9)) for r in rows_of(chart) if "mean" in r}
    a, b = (parquet(r).filter(pl.col("metric") == "train_loss").sort("step") for r in runs)
    expected = {(s * 16, round((x + y) / 2, 9)) for s, x, y in zip(a["step"], a["value"], b["value"])}
    assert means == expected  # x in sequences: step × batch
    assert {"metric": "train_loss", "value": math.log(2), "label": "ln 2"} in rows_of(chart)
    assert any(r.get("kind") == "transition" and r["step"] == 96 for r in rows_of(chart))
    png, svg = figures.save_figure(chart, tmp_path / "singh")
    check_files(png, svg, "training sequences seen (steps × batch 16)", "ln 2")


def test_reddy_figure_cells_are_the_tables(tmp_path):
    table = pl.DataFrame({"K": [64, 64, 256], "B": [1, 2, 1], "icl_accuracy_mean": [0.1, 0.6, 0.9],
                          "iwl_accuracy_mean": [0.8, 0.3, 0.05]})
    chart = figures.reddy_figure(table)
    cells = {(r["x"], r["y"], r["value"]) for r in rows_of(chart) if "diagonal" in r}
    icl = {("1", "64", 0.1), ("2", "64", 0.6), ("1", "256", 0.9)}
    iwl = {("1", "64", 0.8), ("2", "64", 0.3), ("1", "256", 0.05)}
    assert icl | iwl <= cells
    assert any(r["x"] == "2" and r["y"] == "256" and r["value"] is None for r in rows_of(chart))  # no such cell: empty
    png, svg = figures.save_figure(chart, tmp_path / "reddy")
    check_files(png, svg, "burstiness B", "classes K", "ICL accuracy", "IWL accuracy")


@pytest.mark.slow
def test_nanda_figure_draws_the_four_losses_on_a_log_axis_and_s1(tmp_path, modular_run):
    chart = figures.nanda_figure(modular_run)
    stored = parquet(modular_run)
    names = set(stored["metric"].to_list())
    # the paper's protocol: restricted/excluded loss with the final model's key frequencies, which train() adds
    losses = ["train_loss", "test_loss", *(m + "_final_keys" if m + "_final_keys" in names else m for m in ("restricted_loss", "excluded_loss"))]
    assert "restricted_loss_final_keys" in losses
    drawn = {(r["metric"], r["step"], r["value"]) for r in rows_of(chart) if "value" in r and "metric" in r}
    want = stored.filter(pl.col("metric").is_in(losses) & (pl.col("value") > 0))
    renamed = {(m.removesuffix("_final_keys"), step, v) for m, step, v in want.select("metric", "step", "value").iter_rows()}
    assert renamed <= drawn  # drawn under the paper's names, the title naming the final keys
    assert "final model's key frequencies" in str(chart.to_dict()["vconcat"][0]["title"])
    train_acc = stored.filter(pl.col("metric") == "train_accuracy").sort("step")
    s1 = next(s for s, v in zip(train_acc["step"], train_acc["value"]) if v >= 1.0)  # memorised by then (lr 1e-2)
    assert {"step": s1, "label": "s₁ train acc = 1"} in rows_of(chart)
    assert chart.to_dict()["vconcat"][0]["vconcat"][0]["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    png, svg = figures.save_figure(chart, tmp_path / "nanda")
    check_files(png, svg, "training steps", "weight_norm")


@pytest.mark.slow
def test_rfm_figure_and_the_fraction_table_write_theirs(tmp_path):
    from icl_lab.experiments.rfm import FIGURE_STEM, run_fractions
    from icl_lab.rfm import RFMConfig

    run_fractions(tmp_path, [0.5, 0.8], RFMConfig(p=7, iters=3, device="cpu"), progress=False)
    check_files(tmp_path / f"{FIGURE_STEM}.png", tmp_path / f"{FIGURE_STEM}.svg", "RFM iterations", "circulant_deviation")
    chart = figures.rfm_figure({"a": [tmp_path / "frac0.5"]})
    drawn = {(r["metric"], r["step"], r["value"]) for r in rows_of(chart) if "value" in r and "metric" in r}
    stored = parquet(tmp_path / "frac0.5").filter(pl.col("metric").is_in(["test_accuracy", "circulant_deviation"]))
    assert set(stored.select("metric", "step", "value").iter_rows()) <= drawn


@pytest.mark.slow
def test_plot_verb_writes_the_figure_and_says_where(tmp_path, done_run, capsys):
    out = tmp_path / "figs" / "mine.svg"
    assert main(["plot", str(done_run), "--metrics", "icl_accuracy,train_loss", "--out", str(out), "--log-y"]) == 0
    check_files(out.with_suffix(".png"), out, "icl_accuracy")
    assert str(out.with_suffix(".png")) in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["{missing}", "--metrics", "icl_accuracy"], "does not exist"),
    (["{tmp}", "--metrics", "icl_accuracy"], "is not a run folder"),
    (["{run}", "--metrics", "icl_acuracy"], "'icl_acuracy' is not a metric of .*icl_accuracy"),
    (["{run}", "--metrics", "icl_accuracy", "--out", "{tmp}/f.pdf"], "not '.pdf'"),
    (["{run}"], "give --metrics"),
    (["{run}", "--figure", "nanda"], "needs a modular-arithmetic transformer run"),
    (["{run}", "--figure", "rfm", "--metrics", "icl_accuracy"], "leave out --metrics"),
])
def test_plot_verb_refuses_bad_input_writing_nothing(tmp_path, done_run, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    fill = {"missing": str(tmp_path / "nope"), "tmp": str(tmp_path / "empty"), "run": str(done_run)}
    argv = [a.format(**fill) for a in argv]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        main(["plot", *argv])
    assert stop.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_nanda_marks_of_a_run_still_training_are_read_from_its_curves(modular_run):
    """A run without summary.json yet: s₁ from the curves is the finished run's summary step."""
    from icl_lab import explore
    from icl_lab.figures.nanda import reached

    (info,) = figures.read_runs([modular_run])
    from_curves = reached(info, explore.load_curves([info]))
    assert from_curves.height >= 1 and from_curves.equals(explore.milestone_marks(info))
