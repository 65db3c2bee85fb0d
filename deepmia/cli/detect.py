"""Detection commands: ``deepmia train detect``, ``deepmia evaluate detect``."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, err_console, print_json, write_card

__all__ = ["add_commands"]


def train_detect(
    dataset: Path = typer.Option(..., "--dataset", help="Detection dataset folder (with a train/val split)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    time_budget: str = typer.Option(None, "--time-budget", help="Training wall-clock budget, e.g. 60m."),
    override: list[str] = typer.Option([], "--set", help="Plan override key=value (repeatable)."),
) -> None:
    """Plan anchors from the boxes, train a RetinaNet and write a detection model directory."""
    from deepmia.cli._common import parse_duration
    from deepmia.tasks.detect.train import train

    metrics = train(dataset, out, time_budget_s=parse_duration(time_budget), overrides=list(override),
                    progress=lambda msg: err_console.print(msg, soft_wrap=True))
    write_card(out, "detect", dataset)
    coco = metrics["validation"]["coco"]
    console.print(f"validation: mAP@0.5 {coco['map50']:.4f}, mAP@[.5:.95] {coco['map']:.4f} -> {out}")


def evaluate_detect(
    pred: Path = typer.Argument(..., help="predictions.json (COCO results) or the folder holding it."),
    gt: Path = typer.Argument(..., help="The reference: a detection dataset folder."),
    split: str = typer.Option("test", "--split", help="test, val, train or all."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json."),
    froc_iou: float = typer.Option(None, "--froc-iou", help="IoU for an FROC hit (default 0.5 in 2D, 0.1 in 3D)."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples for the intervals (0: none)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """COCO mAP@[.5:.95], mAP@0.5, per-class AP, AR@100, FROC and CPM, with bootstrap intervals."""
    from deepmia.tasks.detect.evaluate import evaluate

    m = evaluate(pred, gt, split=split, out=out, froc_iou=froc_iou, n_resamples=resamples)
    if json_out:
        print_json(m)
        return
    coco = m["coco"]
    per_class = ", ".join(f"{k} {v['ap50']:.3f}" for k, v in coco["per_class"].items())
    line = (f"{m['n_images']} {split} images: mAP@[.5:.95] {coco['map']:.4f}, mAP@0.5 {coco['map50']:.4f}, "
            f"AR@100 {coco['ar100']:.4f}; AP@0.5 {per_class}")
    if m["froc"]:
        line += f"; CPM {m['froc']['cpm']:.4f} (IoU {m['froc_iou']})"
    console.print(line, soft_wrap=True)


def add_commands(*, app: typer.Typer, train: typer.Typer, evaluate: typer.Typer) -> None:
    """Add the detection commands."""
    train.command("detect")(train_detect)
    evaluate.command("detect")(evaluate_detect)
