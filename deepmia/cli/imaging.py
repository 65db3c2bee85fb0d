"""``deepmia info`` and ``deepmia convert``."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, print_json


def info(
    path: Path = typer.Argument(..., help="An image file, or a folder of DICOM files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Shape, spacing, orientation, modality and intensity range of an image; for a folder, its series."""
    from deepmia.io import read_image

    if path.is_dir():
        from deepmia.io.dicom import list_series

        series = [s.summary() for s in list_series(path)]
        if as_json:
            print_json({"path": str(path), "series": series})
            return
        if not series:
            console.print(f"{path}: no DICOM series found")
        for s in series:
            console.print(
                f"[bold]{s['series_uid']}[/bold]  {s.get('modality') or '?'}  {s.get('description') or ''}  "
                f"{s['num_files']} files  {s.get('rows')}x{s.get('columns')}"
            )
        return
    image = read_image(path)
    summary = {"path": str(path), **image.summary()}
    if as_json:
        print_json(summary)
        return
    console.print(repr(image))
    for key in ("modality", "orientation", "oblique", "spacing_mm", "origin_mm", "min", "max"):
        console.print(f"  {key:12s} {summary[key]}")


def convert(
    src: Path = typer.Argument(..., help="Input image file or DICOM series folder."),
    dst: Path = typer.Argument(..., help="Output file; its suffix names the format. No suffix: a DICOM series folder."),
    series_uid: str = typer.Option(None, "--series-uid", help="Which series to read from a folder with several."),
    resample: bool = typer.Option(
        False, "--resample", help="Resample a tilted or unevenly spaced DICOM series onto a regular grid (off by default)."
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


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("convert")(convert)
