"""``deepmia explain``: saliency overlays of a classification model's decisions (delivery over deepmia.explain)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, err_console


def explain(
    model_dir: Path = typer.Argument(..., help="A classification model directory."),
    src: Path = typer.Argument(..., help="An image file or a folder of them."),
    dst: Path = typer.Argument(..., help="Output folder for the overlays."),
    methods: str = typer.Option("gradcam,gradcampp,occlusion", "--methods", help="Comma-separated methods."),
    clinical: Path = typer.Option(None, "--clinical", help="Clinical CSV for a fusion model."),
) -> None:
    """Grad-CAM, Grad-CAM++ and occlusion-sensitivity overlays (PNG for 2D; NIfTI + slice PNGs for 3D)."""
    from deepmia.cli._common import require_model
    from deepmia.explain.classify import explain_path

    require_model(model_dir, "classify", "explain")
    report = explain_path(model_dir, src, dst, methods=[m.strip() for m in methods.split(",") if m.strip()],
                          clinical=clinical)
    for _name, reason in report["skipped"]:
        err_console.print(f"[red]skipped[/] {reason}", soft_wrap=True)
    console.print(f"{report['explained']} explained, {len(report['skipped'])} skipped -> {report['out']}")
    if report["skipped"]:
        raise typer.Exit(1)


def add_commands(app: typer.Typer) -> None:
    """Add ``explain`` to the root app."""
    app.command("explain")(explain)
