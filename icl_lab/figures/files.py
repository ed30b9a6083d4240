"""Writing a chart as PNG and SVG with vl-convert (Vega-Lite rendered in-process, no browser)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import altair as alt

FORMATS = (".png", ".svg")
PNG_SCALE = 2  # twice the chart's pixel size: sharp in a paper or a slide


def _vega_lite_version() -> str | None:
    """The Vega-Lite version Altair writes (e.g. "6.4"), when vl-convert has it; else its default."""
    import vl_convert

    wanted = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return wanted if wanted in vl_convert.get_vegalite_versions() else None


def _atomic_write(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, then a rename: a reader never sees half a figure."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        f.write(data)
        temporary = Path(f.name)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_figure(chart: alt.TopLevelMixin, stem: str | Path) -> tuple[Path, Path]:
    """Write `chart` to STEM.png and STEM.svg (the folder is made if needed); their paths."""
    import vl_convert  # imported here: loading its engine takes a moment, only figures need it

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_json()
    version = _vega_lite_version()
    options = {"vl_version": version} if version else {}
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    _atomic_write(png, vl_convert.vegalite_to_png(spec, scale=PNG_SCALE, **options))
    _atomic_write(svg, vl_convert.vegalite_to_svg(spec, **options).encode())
    return png, svg
