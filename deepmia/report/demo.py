"""The demo page: one HTML file that shows, per sample, its figures, what the image is and what the models found.

Plain string templates (every value escaped); values are written as a person reads them (``35 × 51 × 35``,
``1.41 mL``), never as JSON.

Example:
    >>> format_value([1.0, 0.976562, 2.0])
    '1 × 0.9766 × 2'
    >>> format_value({"anterior": "1.41 mL", "posterior": "1.65 mL"})
    'anterior: 1.41 mL; posterior: 1.65 mL'
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.image import Image

__all__ = ["DemoSection", "format_value", "image_facts", "render_demo_page", "write_demo_page"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
    "figure{display:inline-block;margin:4px 8px 12px 0;vertical-align:top}"
    "figcaption{font-size:90%;color:#444;max-width:640px}img{border:1px solid #ccc;max-width:100%}"
    "table{border-collapse:collapse;font-size:90%;margin:0 2em 1em 0;display:inline-table;vertical-align:top}"
    "th,td{border:1px solid #ddd;padding:2px 8px;text-align:left}caption{text-align:left;font-weight:600}"
    ".error{color:#b00}section{margin-bottom:2.5em;border-top:1px solid #ccc;padding-top:.5em}"
    ".note{color:#555;font-size:90%}"
)


@dataclass
class DemoSection:
    """One sample on the page.

    Attributes:
        name: The sample's title.
        path: Where it came from (shown under the title).
        figures: ``(caption, file name)`` pairs; file names are relative to the page.
        facts: ``(key, value)`` rows about the image.
        analysis: ``(key, value)`` rows of what the models found (reference vs model).
        notes: Sentences shown under the tables.
        error: Why the sample could not be read (the section then shows only this).
    """

    name: str
    path: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    facts: list[tuple[str, Any]] = field(default_factory=list)
    analysis: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def format_value(value: Any) -> str:
    """A value as a person reads it: sizes with ``×``, 4 significant digits, mappings as ``key: value; ...``."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | np.ndarray):
        return " × ".join(format_value(v) for v in value)
    return str(value)


def image_facts(image: Image) -> list[tuple[str, str]]:
    """What the image is: size, channels, spacing, orientation, type, modality, intensity range."""
    from deepmia.report.figures import geometry_known

    orientation, spacing = geometry_known(image)
    arr = image.array
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    rows = [
        ("size (voxels)" if image.spatial_dims == 3 else "size (pixels)", format_value(list(image.spatial_shape))),
        ("channels", str(image.num_channels)),
        ("spacing (mm)", format_value(list(image.spacing)) if spacing else "unknown"),
        ("orientation", image.orientation if orientation else "unknown (not in the file)"),
        ("data type", str(image.dtype)),
        ("intensity range", f"{format_value(finite.min())} to {format_value(finite.max())}" if finite.size else "–"),
    ]
    for key in ("modality", "format", "series_description", "manufacturer"):
        if image.meta.get(key):
            rows.append((key.replace("_", " "), str(image.meta[key])))
    return rows


def _table(rows: Sequence[tuple[str, Any]], caption: str) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(format_value(v))}</td></tr>"
                   for k, v in rows)
    return f"<table><caption>{html.escape(caption)}</caption>{body}</table>" if rows else ""


def _section(s: DemoSection) -> str:
    head = f"<section><h2>{html.escape(s.name)}</h2><p><code>{html.escape(s.path)}</code></p>"
    if s.error:
        return f"{head}<p class='error'>{html.escape(s.error)}</p></section>"
    figs = "".join(
        f"<figure><img src='{html.escape(f)}' alt='{html.escape(s.name)}: {html.escape(c)}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>"
        for c, f in s.figures
    )
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in s.notes)
    tables = _table(s.analysis, "What the model found") + _table(s.facts, "The image")
    return f"{head}<div class='figs'>{figs}</div><div>{tables}</div>{notes}</section>"


def render_demo_page(sections: Sequence[DemoSection], *, title: str = "deepmia demo",
                     intro: str = "") -> str:
    """The whole page as HTML text."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        + (f"<p>{html.escape(intro)}</p>" if intro else "")
        + "".join(_section(s) for s in sections) + "</body></html>"
    )


def write_demo_page(sections: Sequence[DemoSection], out_dir: str | PathLike[str], *, title: str = "deepmia demo",
                    intro: str = "") -> Path:
    """Write ``out_dir/index.html`` (the figures are expected beside it); returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text(render_demo_page(sections, title=title, intro=intro), encoding="utf-8")
    return page
