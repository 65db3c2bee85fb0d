"""``deepmia quality``: no-reference and full-reference image-quality measures with pass/warn/fail flags."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, print_json

_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "info": "dim"}


def quality(
    path: Path = typer.Argument(..., help="Image file or DICOM series folder to assess."),
    reference: Path = typer.Option(
        None, "--reference", "-r", help="Clean reference on the same grid: adds PSNR, SSIM."
    ),
    mask: Path = typer.Option(None, "--mask", "-m", help="Foreground mask on the same grid (default: automatic)."),
    no_bias: bool = typer.Option(False, "--no-bias", help="Skip the N4 non-uniformity measure."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    figure: Path = typer.Option(None, "--figure", help="Write a montage: image, reference, difference, foreground."),
) -> None:
    """Measure SNR, CNR, noise, sharpness, clipping, ghosting, non-uniformity and geometry; flag each."""
    import numpy as np

    from deepmia.image import Image
    from deepmia.io import read_image
    from deepmia.quality import assess, foreground_mask

    image = read_image(path)
    ref = read_image(reference) if reference is not None else None
    msk = read_image(mask, kind="label") if mask is not None else None
    report = assess(image, reference=ref, mask=msk, bias=not no_bias)
    if figure is not None:
        from deepmia.processing.figure import save_montage

        first = image.with_array(image.array[:1].astype(np.float32))
        rows = [("image", first)]
        if ref is not None:
            r = ref.with_array(ref.array[:1].astype(np.float32))
            rows += [("reference", r), ("|image - ref|", first.with_array(np.abs(first.array - r.array)))]
        fg = msk.array[:1] != 0 if msk is not None else foreground_mask(first.array[0], first.spacing)[None]
        rows.append(("foreground", Image(fg.astype(np.uint8), image.affine, kind="label")))
        figure.parent.mkdir(parents=True, exist_ok=True)
        save_montage(rows, figure, slices_from=first)
    if as_json:
        print_json(report.to_dict())
        return
    console.print(f"{path}: [bold {_STYLE[report.status]}]{report.status}[/]", soft_wrap=True)
    for m in report.measures:
        value = "n/a" if m.value is None else f"{m.value:.4g}"
        console.print(
            f"  [{_STYLE[m.status]}]{m.status:4s}[/] {m.name:18s} {value:>10s} {m.unit:6s} ({m.threshold})",
            soft_wrap=True,
        )
    if figure is not None:
        console.print(f"wrote {figure}")


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("quality")(quality)
