"""Commands: ``deepmia report PRED_DIR --out report.html|pdf [--lang en|zh]`` (issue 13)."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    pred_dir: Path = typer.Argument(..., help="Output folder of deepmia predict (or deepmia register)."),
    out: Path = typer.Option(..., "--out", "-o", help="The report: report.html or report.pdf (format by suffix)."),
    lang: str = typer.Option("en", "--lang", help="Language: en (English) or zh (Simplified Chinese)."),
    model: Path = typer.Option(None, "--model", help="Model directory, when the one run.json names is not here."),
) -> None:
    """Write a clinical report: one page per case, key images, measurements, findings, quality, model card."""
    from deepmia.cli._common import console
    from deepmia.report.clinical import write_report
    from deepmia.report.clinical.i18n import check_language

    check_language(lang)
    path = write_report(pred_dir, out, lang=lang, model_dir=model)
    console.print(f"wrote {path} ({path.stat().st_size // 1024} KiB, {lang})", soft_wrap=True, markup=False,
                  highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("report")(report)
