"""Commands: ``deepmia batch predict`` (issue 15): many cases, a local process pool or a Ray cluster, resumable."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from deepmia.errors import InvalidArgumentError

batch_app = typer.Typer(
    name="batch",
    help="Batch jobs over many cases: a local process pool, or a Ray cluster with --ray (pip install deepmia[ray]).",
    no_args_is_help=True,
)


@batch_app.command("predict")
def predict(
    model_dir: Path = typer.Argument(
        ..., help="A trained model directory (with plan.json), or a shipped model's name (see `deepmia models`)."),
    source: str = typer.Option(
        ..., "--input", "-i",
        help='A folder of inputs (as deepmia predict finds them), a dataset folder, or a catalog query such as '
             '"modality=MR" (keys: modality, study, series; the catalog is --db).'),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (holds manifest.jsonl; a re-run resumes)."),
    ray: str = typer.Option(
        None, "--ray", help="Run on the Ray cluster at this address (HOST:PORT from `ray start --head`, or auto)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Worker processes, or model actors with --ray."),
    db: str = typer.Option(
        None, "--db", help="Catalog (SQLite file or database URL): record the job and each predicted series there."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Test-time augmentation where the task has it."),
    folds: str = typer.Option(None, "--folds", help="Comma-separated folds to ensemble (default: all trained)."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Segmentation: also write class probability maps to OUT/probabilities/."),
    figure: bool = typer.Option(False, "--figure", help="Also draw the results as PNG figures."),
    dicom: bool = typer.Option(False, "--dicom", help="DICOM inputs: also write DICOM SEG/SR objects to OUT/dicom/."),
    runtime: str = typer.Option(None, "--runtime", help="torch, onnx or openvino (as deepmia predict --runtime)."),
    precision: str = typer.Option(None, "--precision", help="The runtime's precision (as deepmia predict)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads per worker (default: CPUs / workers)."),
    chunk: int = typer.Option(
        None, "--chunk", min=1, help="Cases per unit of work (default: the model's batch size, less for few cases)."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Predict every input with MODEL_DIR into OUT, in a local process pool or on a Ray cluster.

    The same files as `deepmia predict`, each written atomically and recorded in OUT/manifest.jsonl, so running
    the same command again skips the cases already done.

    Exit status: 0 all predicted, 1 some inputs skipped (listed in OUT/skipped.csv), 2 nothing predicted, bad
    usage, an unreachable cluster or an output folder that cannot be written.
    """
    from deepmia.cli._common import console, err_console, print_json, progress
    from deepmia.cli.learn import predictor_options
    from deepmia.distributed import batch_predict
    from deepmia.tasks import resolve_model, task_of_model

    model_dir = resolve_model(model_dir)
    task = task_of_model(model_dir)
    if task.name == "register":
        raise InvalidArgumentError("batch predict takes one image per case; registration takes pairs",
                                   path=model_dir, fix="use deepmia predict MODEL FIXED,MOVING OUT")
    try:
        fold_list = [int(f) for f in folds.split(",")] if folds else None
    except ValueError:
        raise InvalidArgumentError(f"--folds {folds!r} is not a comma-separated list of integers") from None
    options = predictor_options(task, {"tta": tta, "folds": fold_list, "probabilities": probabilities or None,
                                        "device": device, "runtime": runtime, "precision": precision})
    if runtime is not None and "runtime" not in options:
        raise InvalidArgumentError(f"--runtime does not apply to a {task.name} model yet", fix="leave out --runtime")
    # Ray prints cluster events (a node lost) on stdout from a thread of its own: they go to stderr, so that stdout
    # holds only this command's output (--json stays parseable).
    with progress() as bar, contextlib.redirect_stdout(sys.stderr):
        job = bar.add_task("batch predict", total=None)
        outcome = batch_predict(
            model_dir, source, out, ray=ray, workers=workers, db=db, options=options,
            formats=["probabilities"] if probabilities else [], figure=figure, dicom=dicom, threads=threads,
            chunk=chunk, progress=lambda d, t, _n: bar.update(job, completed=d, total=t))
    if as_json:
        print_json({"predicted": len(outcome.predicted), "skipped": outcome.skipped, "resumed": outcome.resumed,
                    "retried": outcome.retried, "timings": outcome.timings, "catalog": outcome.catalog,
                    "out": str(out)})
    else:
        for name, reason in outcome.skipped:
            err_console.print(f"skipped {name}: {reason}", soft_wrap=True, markup=False, highlight=False)
        console.print(
            f"{len(outcome.predicted)} of {len(outcome.predicted) + len(outcome.skipped)} predicted "
            f"({outcome.resumed} done earlier, {len(outcome.retried)} retried) -> {out} "
            f"(manifest.jsonl, run.json; {outcome.timings['total_s']:.1f} s)",
            soft_wrap=True, markup=False, highlight=False)
        if outcome.catalog:
            console.print(f"catalog: {outcome.catalog['added']} predictions added, "
                          f"{outcome.catalog['not_in_catalog']} inputs not catalogued series",
                          soft_wrap=True, markup=False, highlight=False)
    if outcome.skipped:
        raise typer.Exit(1)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(batch_app, name="batch")
