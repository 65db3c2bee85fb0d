"""Segmentation commands: ``train segment`` and ``evaluate segment`` (``deepmia predict`` is in learn.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from deepmia.cli._common import console, print_json, progress, write_card


def train_segment(
    dataset: Path = typer.Option(..., "--dataset", help="Segmentation dataset folder (dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Model directory (created; re-running resumes)."),
    fold: int = typer.Option(0, "--fold", help="Cross-validation fold to train."),
    time_budget: str = typer.Option(None, "--time-budget", help="Wall-clock training budget, e.g. 45m."),
    plan: Path = typer.Option(None, "--plan", help="Use this plan file instead of planning."),
    override: list[str] = typer.Option([], "--set", help="Override a plan field: key=value, repeatable."),
    cache: Path = typer.Option(None, "--cache", help="Preprocessing cache folder (default ~/.cache/deepmia)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Preprocessing processes."),
    processes: int = typer.Option(
        1, "--processes", min=1,
        help="Train with this many processes together (DistributedDataParallel; gloo on CPU, NCCL on GPUs).",
    ),
) -> None:
    """Plan (if needed), preprocess, train one fold, choose post-processing and score the validation cases."""
    from deepmia.cli._common import parse_duration
    from deepmia.tasks.segment.train import train_fold

    with progress() as bar:
        jobs: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in jobs:
                jobs[stage] = bar.add_task(stage, total=total)
            bar.update(jobs[stage], completed=done, total=total)

        summary = train_fold(
            dataset,
            out,
            fold=fold,
            plan=plan,
            time_budget_s=parse_duration(time_budget),
            overrides=override,
            cache=cache,
            workers=workers,
            processes=processes,
            progress=report,
            log=lambda m: console.print(m, soft_wrap=True),
        )
    write_card(out, "segment", dataset)
    mean = summary["mean"]["dice"]
    console.print(
        f"fold {fold}: validation Dice {mean['mean']:.4f} (95% CI {mean['ci_low']:.4f}-{mean['ci_high']:.4f}) -> {out}",
        soft_wrap=True,
    )


def evaluate_segment(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted label maps (e.g. deepmia predict's output)."),
    gt_dir: Path = typer.Argument(..., help="Folder of reference label maps (same names, any image format)."),
    out: Path = typer.Option(None, "--out", help="Write per_case.csv and summary.json here."),
    labels: str = typer.Option(
        None, "--labels", help="Labels to score: '1=anterior,2=posterior' (default: all found)."
    ),
    tolerance: float = typer.Option(1.0, "--tolerance", min=0.0, help="NSD tolerance in mm."),
    mask_dir: Path = typer.Option(
        None, "--mask-dir", help="Region-of-interest masks (same names): score only inside them (e.g. a field of view)."
    ),
    prob_dir: Path = typer.Option(
        None, "--prob-dir", help="Probability maps (same names, e.g. from predict --probabilities): adds pixel AUC."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Refuse when a reference has no prediction."),
) -> None:
    """Dice, IoU, HD95, ASSD and NSD per class, with bootstrap 95% intervals over cases.

    Also pooled over all pixels of all cases: Dice (F1), sensitivity, specificity, accuracy and, with
    --prob-dir, pixel AUC. The cases present in both folders are scored; references without a prediction
    are listed as missing (in summary.json too) and the exit status is 1 (--strict: refuse, status 2).
    """
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks.segment.evaluate import evaluate_dirs

    names = None
    if labels:
        try:
            names = {int(k): v for k, v in (item.split("=", 1) for item in labels.split(","))}
        except ValueError as exc:
            raise InvalidArgumentError(f"--labels {labels!r} is not like '1=anterior,2=posterior'") from exc
    with progress(transient=True) as bar:
        job = bar.add_task("evaluate", total=None)
        summary = evaluate_dirs(
            pred_dir,
            gt_dir,
            labels=names,
            tolerance_mm=tolerance,
            mask_dir=mask_dir,
            prob_dir=prob_dir,
            out_dir=out,
            progress=lambda d, t: bar.update(job, completed=d, total=t),
            strict=strict,
        )
    if as_json:
        print_json(summary)
    else:
        _print_segment_summary(summary, out)
    _report_unpaired(summary, gt_dir)
    if summary["missing"]:
        raise typer.Exit(1)


def _report_unpaired(summary: dict[str, Any], gt_dir: Path) -> None:
    """Name, on stderr, the references without a prediction and the predictions without a reference."""
    from deepmia.cli._common import err_console

    missing, extra = summary["missing"], summary["unmatched_predictions"]
    if missing:
        err_console.print(f"{len(missing)} of {summary['n_references']} references in {gt_dir} have no prediction "
                          f"(not scored): {', '.join(missing)}", soft_wrap=True, markup=False)
    if extra:
        err_console.print(f"{len(extra)} prediction(s) have no reference (not scored): {', '.join(extra)}",
                          soft_wrap=True, markup=False)


def _print_segment_summary(summary: dict[str, Any], out: Path | None) -> None:
    console.print(f"{summary['n_cases']} cases", soft_wrap=True)
    for name, entry in {**summary["per_class"], "mean": summary["mean"]}.items():
        cells = []
        for m in ("dice", "iou", "hd95", "assd", "nsd"):
            s = entry[m]
            ci = f" [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
            cells.append(f"{m} {s['mean']:.4f}{ci}")
        console.print(f"  {name:12s} " + "  ".join(cells), soft_wrap=True)
    for name, entry in summary["pooled"].items():
        pooled = {m: v for m, v in entry.items() if m != "n_cases"}
        cells = [f"{m} {v['value']:.4f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for m, v in pooled.items()]
        console.print(f"  {name:12s} pooled: " + "  ".join(cells), soft_wrap=True)
    if out is not None:
        console.print(f"wrote {out / 'per_case.csv'} and {out / 'summary.json'}")


def add_commands(*, app: typer.Typer, train: typer.Typer, evaluate: typer.Typer) -> None:
    """Add the segmentation commands."""
    train.command("segment")(train_segment)
    evaluate.command("segment")(evaluate_segment)
