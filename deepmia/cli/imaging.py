"""``deepmia info`` and ``deepmia convert``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from deepmia.cli._common import console, err_console, print_json

if TYPE_CHECKING:
    from deepmia.image import Image


def info(
    path: Path = typer.Argument(..., help="An image file, or a folder of DICOM files."),
    series_uid: str = typer.Option(
        None, "--series-uid", help="For a folder with several DICOM series: show this one's geometry."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Size, spacing, orientation, modality and intensity range of an image or of a folder's DICOM series.

    A folder holding one series shows that series' geometry; a folder holding several lists them
    (``--series-uid`` picks one to show).
    """
    from deepmia.io import read_image

    if path.is_dir():
        _folder_info(path, series_uid, as_json)
        return
    image = read_image(path)
    summary = {"path": str(path), **_geometry(image)}
    if as_json:
        print_json(summary)
        return
    _print_geometry(image, summary)


# Lines of the table, in order; then the notes a reader recorded, when present.
_TABLE_KEYS = ("modality", "size", "orientation", "oblique", "spacing_mm", "origin_mm", "min", "max")
_NOTE_KEYS = ("inverted_from", "channels", "resampled", "geometry", "diffusion_bvalues")


def _geometry(image: Image) -> dict[str, Any]:
    """``image.summary()`` plus its spatial size; spacing and orientation None when unknown (the rule of figures).

    ``spacing_known`` is :func:`deepmia.io.spacing_known`; a raster picture (PNG, JPEG, ...) or a DICOM file
    without position/orientation has no patient orientation.
    """
    from deepmia.report.figures import geometry_known

    orientation_known, spacing_ok = geometry_known(image)
    summary = {**image.summary(), "size": list(image.spatial_shape), "spacing_known": spacing_ok}
    if not spacing_ok:
        summary["spacing_mm"] = None
    if not orientation_known:
        summary["orientation"] = None
    summary.update({k: image.meta[k] for k in _NOTE_KEYS if k in image.meta})
    return summary


def _print_geometry(image: Image, summary: dict[str, Any]) -> None:
    console.print(f"shape {tuple(image.shape)}  dtype {image.dtype}  kind {image.kind}", highlight=False)
    for key in _TABLE_KEYS + tuple(k for k in _NOTE_KEYS if k in summary):
        value = summary[key]
        if key == "spacing_mm" and value is None:
            value = "unknown (the file states no physical pixel spacing; the affine is in pixels)"
        elif key == "orientation" and value is None:
            value = "unknown (the file states no patient orientation)"
        console.print(f"  {key:14s} {value}", highlight=False, soft_wrap=True)


def _folder_info(path: Path, series_uid: str | None, as_json: bool) -> None:
    """List the DICOM series of ``path``; show the geometry of the only one, or of ``series_uid``."""
    from deepmia.errors import DeepmiaError, SeriesError
    from deepmia.io.dicom import list_series, read_series

    found = list_series(path)
    if not found:
        raise SeriesError("no DICOM series found in the folder", path=path, fix="check the folder holds DICOM images")
    chosen = [s for s in found if s.series_uid == series_uid] if series_uid else found[:1] if len(found) == 1 else []
    if series_uid and not chosen:
        raise SeriesError(
            f"no series with SeriesInstanceUID {series_uid}", path=path,
            fix=f"choose one of: {', '.join(s.series_uid for s in found)}",
        )
    out: dict[str, Any] = {"path": str(path), "series": [s.summary() for s in found]}
    image, problem = None, None
    if chosen:
        try:
            image = read_series(chosen[0].files)
        except DeepmiaError as exc:  # listed anyway; the reason it is not one volume is the information
            problem = str(exc)
        out["geometry"] = _geometry(image) if image is not None else {"error": problem}
    if as_json:
        print_json(out)
    else:
        for s in out["series"]:
            console.print(
                f"[bold]{s['series_uid']}[/bold]  {s.get('modality') or '?'}  {s.get('description') or ''}  "
                f"{s['num_files']} files  {s.get('rows')}x{s.get('columns')}", soft_wrap=True,
            )
        if image is not None:
            _print_geometry(image, out["geometry"])
        elif problem is None:
            console.print(f"{len(found)} series: pass --series-uid UID to show one series' geometry", highlight=False)
    if problem is not None:
        err_console.print(f"error: {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def convert(
    src: Path = typer.Argument(..., help="Input image file or DICOM series folder."),
    dst: Path = typer.Argument(..., help="Output file; its suffix names the format. No suffix: a DICOM series folder."),
    series_uid: str = typer.Option(None, "--series-uid", help="Which series to read from a folder with several."),
    resample: bool = typer.Option(
        False, "--resample",
        help="Resample a tilted or unevenly spaced DICOM series onto a regular grid (off by default).",
    ),
) -> None:
    """Convert between formats, keeping voxels and world geometry."""
    from deepmia.io import format_of, read_image, write_image

    options = {}
    if series_uid:
        options["series_uid"] = series_uid
    if resample:
        options["resample"] = True
    fmt = None
    if not dst.suffix or str(dst).endswith("/"):
        fmt = "dicom"
    else:
        format_of(dst, must_exist=False)  # an unknown output suffix fails before the (slow) read
    image = read_image(src, **options)
    write_image(image, dst, format=fmt)
    console.print(f"wrote {dst}: {image!r}")


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("info")(info)
    app.command("convert")(convert)
