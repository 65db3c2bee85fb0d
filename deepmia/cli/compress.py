"""Commands: deepmia compress MODEL_DIR --out SMALL_DIR [--distill] [--prune R] (issue 15)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, err_console, print_json, write_card

__all__ = ["add_commands"]


def compress(
    model_dir: Path = typer.Argument(..., help="The trained model directory to compress (the teacher)."),
    out: Path = typer.Option(..., "--out", help="The smaller model directory to write."),
    dataset: Path = typer.Option(..., "--dataset", help="The dataset folder the model was trained on (its "
                                 "split.json's training and validation cases are read from it)."),
    distill: bool = typer.Option(False, "--distill", help="Train the smaller network on the model's soft outputs."),
    prune: float = typer.Option(None, "--prune", help="Remove this fraction of every layer's channels (by filter "
                                "L1 norm), then fine-tune (classification ResNets)."),
    width: float = typer.Option(0.5, "--width", help="Width of a distilled student, as a fraction of the model's "
                                "(0.5: every layer's filters halved); with --prune the width is 1 - R."),
    time_budget: str = typer.Option("10m", "--time-budget", help="Training wall-clock budget, e.g. 10m."),
    temperature: float = typer.Option(4.0, "--temperature", help="Softmax temperature of the distillation targets."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the distillation term (1 - alpha: the labels')."),
    cache: Path = typer.Option(None, "--cache", help="Preprocessing cache of segmentation (default as training)."),
    json_out: bool = typer.Option(False, "--json", help="Print the compression record as JSON."),
) -> None:
    """Write a smaller model (distilled and/or pruned) with its own card and metrics; every command reads it."""
    from deepmia.cli._common import parse_duration
    from deepmia.tasks import resolve_model, task_of_model
    from deepmia.tasks.compress import CompressOptions
    from deepmia.tasks.compress import compress as run

    model_dir = resolve_model(model_dir)
    options = CompressOptions(distill=distill, prune=prune, width=width, temperature=temperature, alpha=alpha,
                              time_budget_s=parse_duration(time_budget) or 600.0).check()
    record = run(model_dir, out, dataset, options, cache=cache,
                 say=lambda msg: err_console.print(msg, soft_wrap=True, markup=False, highlight=False))
    write_card(out, task_of_model(out).name, dataset)
    if json_out:
        print_json(record)
        return
    metric = "validation_auroc" if record["task"] == "classify" else "validation_dice"
    console.print(f"{record['method']}: {record['teacher_parameters']:,} -> {record['student_parameters']:,} "
                  f"parameters; validation {metric.split('_')[1]} {record.get('teacher_' + metric)} -> "
                  f"{record.get(metric)} -> {out}", soft_wrap=True, markup=False, highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("compress")(compress)
