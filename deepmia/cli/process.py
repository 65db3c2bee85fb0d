"""``deepmia process``: apply named processing steps to an image; ``deepmia nyul-fit``: learn Nyúl landmarks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import typer

from deepmia.cli._common import console


def process(
    src: Path = typer.Argument(None, help="Input image file or DICOM series folder."),
    dst: Path = typer.Argument(None, help="Output file; its suffix names the format."),
    step: list[str] = typer.Option(
        [], "--step", "-s", help="NAME[:key=value,...], repeatable, applied in order (lists as [1,2,3])."
    ),
    label: bool = typer.Option(False, "--label", help="Read the input as a label image."),
    table: Path = typer.Option(
        None, "--table", help="Write the output's per-component table (.csv or .json): volume, bbox, centroid, mean."
    ),
    figure: Path = typer.Option(None, "--figure", help="Write a before/after montage of representative slices."),
    response: Path = typer.Option(None, "--response", help="Plot the frequency response of the frequency steps."),
    list_steps: bool = typer.Option(False, "--list", help="List every step with its parameters and exit."),
) -> None:
    """Apply processing steps in order, e.g. ``--step gaussian:sigma=1.5 --step otsu``; writes DST."""
    from deepmia.errors import InvalidArgumentError
    from deepmia.processing import all_steps, resolve_steps

    if list_steps:
        for spec in all_steps():
            console.print(spec.describe(), markup=False, highlight=False, soft_wrap=True)
        return
    if src is None or dst is None:
        raise InvalidArgumentError("process needs SRC and DST", fix="see deepmia process --help, or --list for steps")
    if not step:
        raise InvalidArgumentError("no --step given", fix="add e.g. --step gaussian:sigma=1; --list shows every step")
    from deepmia.io import format_of, read_image, write_image

    format_of(dst, must_exist=False)  # fail on a bad output suffix before any work
    plan = resolve_steps(step)  # validates every step before any runs
    image = read_image(src, kind="label" if label else "intensity")
    out = image
    for spec, params in plan:
        out = spec.func(out, **params)
    write_image(out, dst)
    console.print(f"wrote {dst}: {out!r}", soft_wrap=True)
    if table is not None:
        _write_table(out, image, table)
    if figure is not None:
        from deepmia.processing.figure import save_montage

        figure.parent.mkdir(parents=True, exist_ok=True)
        save_montage([("input", image), ("output", out)], figure)
        console.print(f"wrote {figure}")
    if response is not None:
        _plot_responses(plan, image, response)


def _write_table(out, image, path: Path) -> None:
    from deepmia.errors import InvalidArgumentError
    from deepmia.processing.morphology import component_table

    if out.kind != "label":
        raise InvalidArgumentError("--table needs a label output; end the steps with a segmentation step")
    rows = component_table(out, image if image.kind == "intensity" and image.same_geometry(out) else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2) + "\n")
    else:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["label"])
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: (" ".join(f"{x:g}" for x in v) if isinstance(v, list) else v) for k, v in row.items()}
                )
    console.print(f"wrote {path}: {len(rows)} components")


def _plot_responses(plan, image, path: Path) -> None:
    from deepmia.errors import InvalidArgumentError
    from deepmia.processing.frequency import plot_response

    freq = [(spec, params) for spec, params in plan if spec.name in ("lowpass", "highpass", "bandpass")]
    if not freq:
        raise InvalidArgumentError("--response needs a lowpass, highpass or bandpass step")
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, (spec, params) in enumerate(freq):
        target = path if len(freq) == 1 else path.with_name(f"{path.stem}_{i + 1}{path.suffix}")
        band = {k: v for k, v in params.items() if k in ("cutoff", "low", "high")}
        plot_response(target, spec.name, spacing=image.spacing, kinds=(params["kind"],), order=params["order"], **band)
        console.print(f"wrote {target}")


def nyul_fit(
    images: list[Path] = typer.Argument(..., help="Training images (first channel of each is used)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the landmarks (.json)."),
    masks: list[Path] = typer.Option([], "--mask", help="Foreground masks, one per image, in the same order."),
) -> None:
    """Learn Nyúl histogram-standardisation landmarks; apply them with ``--step nyul:model=OUT``."""
    from deepmia.io import read_image
    from deepmia.processing.standardize import fit_nyul

    model = fit_nyul(
        (read_image(p) for p in images),
        masks=[read_image(m, kind="label") for m in masks] if masks else None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    console.print(f"wrote {out}: landmarks of {model.num_images} images")


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("process")(process)
    app.command("nyul-fit")(nyul_fit)
