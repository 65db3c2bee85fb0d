"""Classification commands: ``deepmia train classify``, ``deepmia evaluate classify``."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, err_console, print_json, write_card

__all__ = ["add_commands"]


def train_classify(
    dataset: Path = typer.Option(..., "--dataset", help="Classification dataset folder (with a train/val split)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write."),
    time_budget: str = typer.Option(None, "--time-budget", help="Training wall-clock budget, e.g. 15m."),
    clinical: Path = typer.Option(None, "--clinical", help="Clinical CSV joined on case id: trains a fusion model."),
    clinical_columns: str = typer.Option(None, "--clinical-columns", help="Comma-separated columns to use."),
    id_column: str = typer.Option("case_id", "--id-column", help="Case-id column of the clinical CSV."),
    fusion: str = typer.Option(None, "--fusion", help="Fusion of clinical features: late or film."),
    override: list[str] = typer.Option([], "--set", help="Plan override key=value (repeatable)."),
    positive_class: str = typer.Option(
        None, "--positive-class", help="The positive (disease) class the operating threshold applies to (default: "
        "dataset.json's positive_class, else the class whose name is not normal/benign/negative, else class 1)."),
    processes: int = typer.Option(
        1, "--processes", min=1,
        help="Train with this many processes together (DistributedDataParallel; gloo on CPU, NCCL on GPUs).",
    ),
) -> None:
    """Plan, train, calibrate and write a classification model directory."""
    from deepmia.cli._common import parse_duration
    from deepmia.tasks.classify.train import train

    if clinical is None and (fusion or clinical_columns):
        from deepmia.errors import InvalidArgumentError

        raise InvalidArgumentError("--fusion and --clinical-columns need --clinical (the clinical CSV)")
    overrides = list(override) + ([f"fusion_mode={fusion}"] if fusion else [])
    metrics = train(dataset, out, time_budget_s=parse_duration(time_budget), overrides=overrides, clinical=clinical,
                    clinical_columns=clinical_columns.split(",") if clinical_columns else None, id_column=id_column,
                    positive_class=positive_class, processes=processes,
                    progress=lambda msg: err_console.print(msg, soft_wrap=True))
    write_card(out, "classify", dataset)
    val = metrics["validation"]
    auc = val["auroc"]["macro"]["auc"]
    cal = metrics["calibration"]
    point = (f", threshold {cal['threshold']:.3f} on P({cal['positive_class']})"
             if cal.get("positive_class") and len(val.get("class_order") or []) == 2 else "")
    console.print(f"validation: AUROC {auc:.4f}" + (f", accuracy {val['accuracy']:.4f}" if "accuracy" in val else "")
                  + f"; temperature {cal['temperature']:.3f}{point} -> {out}", soft_wrap=True, markup=False,
                  highlight=False)


def evaluate_classify(
    model_dir: Path = typer.Argument(..., help="A classification model directory."),
    dataset: Path = typer.Option(..., "--dataset", help="Dataset folder with the cases to score."),
    out: Path = typer.Option(..., "--out", help="Folder for metrics.json and reliability.png."),
    split: str = typer.Option("test", "--split", help="test, val or all."),
    sensitivity: float = typer.Option(None, "--sensitivity", help="Also report the point reaching this sensitivity."),
    clinical: Path = typer.Option(None, "--clinical", help="Clinical CSV for a fusion model."),
    record: bool = typer.Option(False, "--record", help="Store the results in MODEL_DIR/metrics.json and the card."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Accuracy, balanced accuracy, AUROC with 95% CIs, operating points, F1, confusion matrix, ECE."""
    from deepmia.cli._common import require_model
    from deepmia.tasks.classify.evaluate import evaluate

    require_model(model_dir, "classify", "evaluate classify")
    m = evaluate(model_dir, dataset, out, split=split, target_sensitivity=sensitivity, clinical=clinical,
                 record=record)
    if record:
        write_card(model_dir, "classify")
    if json_out:
        print_json(m)
        return
    macro = m["auroc"]["macro"]
    console.print(f"{m['n_cases']} {split} cases: accuracy {m['accuracy']:.4f}, balanced accuracy "
                  f"{m['balanced_accuracy']:.4f}, AUROC {macro['auc']:.4f}, ECE {m['ece']:.4f} "
                  f"(before temperature scaling {m.get('ece_uncalibrated', float('nan')):.4f}) -> {out}",
                  soft_wrap=True, markup=False, highlight=False)


def add_commands(*, app: typer.Typer, train: typer.Typer, evaluate: typer.Typer) -> None:
    """Add the classification commands."""
    train.command("classify")(train_classify)
    evaluate.command("classify")(evaluate_classify)
