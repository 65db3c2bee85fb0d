"""Learning commands: ``plan``, ``train <task>``, ``predict``, ``evaluate <task>``, and each task's own commands.

Each task's commands live in a CLI module of this package (a fixed list below); each provides
``add_commands(app=, train=, evaluate=)`` over its task package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import typer

from deepmia.errors import InvalidArgumentError

# The CLI modules (in deepmia.cli) that add each task's train/evaluate commands: a fixed list.
TASK_CLI_MODULES = ("segment", "classify", "registration", "detect")

train_app = typer.Typer(help="Train a model: deepmia train <task> --dataset DIR --out MODEL_DIR.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Score predictions against references: deepmia evaluate <task> ...", no_args_is_help=True
)


def _task_module(name: str) -> ModuleType:
    return importlib.import_module(f"deepmia.cli.{name}")


def predictor_options(task: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of ``task``'s predictor among the command line's; refuses flags it does not take.

    The options a task takes are read from its predictor's signature, so a new option needs no list here.
    """
    import inspect

    params = inspect.signature(task.predictor().__init__).parameters
    accepted = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    flags = {"probabilities": "--probabilities", "clinical": "--clinical", "min_score": "--min-score",
             "folds": "--folds"}
    for key, flag in flags.items():
        if opts.get(key) not in (None, False) and key not in accepted:
            raise InvalidArgumentError(f"{flag} does not apply to a {task.name} model", fix=f"leave out {flag}")
    return {k: v for k, v in opts.items() if k in accepted and v is not None}


def predict(
    model_dir: Path = typer.Argument(
        ..., help="A trained model directory (with plan.json), or a shipped model's name (see `deepmia models`)."),
    src: Path = typer.Argument(..., help="An image file, a DICOM series folder, or a folder of inputs."),
    dst: Path = typer.Argument(..., help="Output folder (for one image input of a segmentation model: a file)."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Test-time augmentation where the task has it."),
    folds: str = typer.Option(None, "--folds", help="Comma-separated folds to ensemble (default: all trained)."),
    figure: bool = typer.Option(False, "--figure", help="Also draw the results as PNG figures."),
    dicom: bool = typer.Option(
        False, "--dicom", help="Also write DICOM objects to OUT/dicom/ (segmentation: SEG + SR, with "
                               "--probabilities also a fractional SEG; classification and detection: SR). "
                               "Non-DICOM inputs need --patient-id or --template."
    ),
    patient_id: str = typer.Option(None, "--patient-id", help="--dicom on non-DICOM inputs: the patient's id."),
    study_uid: str = typer.Option(None, "--study-uid", help="--dicom on non-DICOM inputs: the study (default: new)."),
    template: Path = typer.Option(
        None, "--template", help="--dicom on non-DICOM inputs: a DICOM file whose patient and study are used."),
    probabilities: bool = typer.Option(
        False, "--probabilities",
        help="Segmentation: also write class probability maps to OUT/probabilities/ (with --dicom: a fractional SEG)."
    ),
    clinical: Path = typer.Option(
        None,
        "--clinical",
        help="Clinical CSV for an image + clinical classification model, joined on case id = file name without suffix.",
    ),
    min_score: float = typer.Option(None, "--min-score", help="Detection: draw and count boxes from this score."),
    server: str = typer.Option(None, "--server", help="Submit to a running deepmia service at this URL instead "
                                                      "(MODEL is its model name; see docs/service.md)."),
    token: str = typer.Option(None, "--token", help="API token for --server (from `deepmia user add`)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (the GPU when there is one)."),
    runtime: str = typer.Option(
        "torch", "--runtime", help="Where the network runs: torch, onnx or openvino (needs `deepmia export onnx`)."),
    precision: str = typer.Option(
        None, "--precision", help="torch: fp32 or bf16 (default: the plan's); onnx: fp32, fp16 or int8; openvino: "
                                  "fp32, bf16, fp16 or int8 (default fp32)."),
) -> None:
    """Predict with a trained model: the task comes from MODEL_DIR/plan.json.

    Writes the task's outputs, skipped.csv (inputs that failed, with the reason), measurements.csv and run.json
    (model and hashes, versions, inputs with hashes, options, device, timings). Exit status: 0 all predicted,
    1 some inputs skipped, 2 nothing predicted or bad usage.
    """
    if server:
        from deepmia.service.client import predict_remote

        if not token:
            raise InvalidArgumentError("--server needs --token", fix="`deepmia user add NAME --role annotator`")
        predict_remote(str(model_dir), src, dst, server=server, token=token, tta=tta)
        return
    from deepmia.tasks import resolve_model, task_of_model

    model_dir = resolve_model(model_dir)
    task = task_of_model(model_dir)
    try:
        fold_list = [int(f) for f in folds.split(",")] if folds else None
    except ValueError:
        raise InvalidArgumentError(f"--folds {folds!r} is not a comma-separated list of integers") from None
    options = predictor_options(task, {
        "tta": tta, "folds": fold_list, "clinical": clinical, "probabilities": probabilities or None,
        "min_score": min_score, "device": device, "runtime": runtime, "precision": precision,
    })
    formats = ["probabilities"] if probabilities else []
    if dicom and task.name == "register":
        raise InvalidArgumentError("--dicom does not write registration results (see docs/clinical-outputs.md)",
                                   fix="leave out --dicom")
    identity = _dicom_identity(src, dicom, patient_id, study_uid, template)
    if task.name == "register":
        _task_module("registration").predict(model_dir, src, dst, options={"figure": figure, "device": device,
                                                                            "runtime": runtime, "precision": precision})
        return
    predictor = task.predictor()(model_dir, **options)
    if figure and task.name == "detect" and predictor.plan.spatial_dims != 2:
        raise InvalidArgumentError("--figure draws 2D images; this is a 3D model", path=model_dir,
                                   fix="leave out --figure (3D boxes are in predictions.json with world coordinates)")
    if identity is not None and identity.given:  # recorded in run.json: `deepmia export dicom` reuses the study
        options |= {"dicom_patient_id": identity.patient_id, "dicom_study_uid": identity.study_uid,
                    "dicom_template": identity.template}
    _run_predictions(predictor, src, dst, formats=formats, options={**options, "figure": figure, "dicom": dicom},
                     figure=figure, dicom=dicom, identity=identity)


def _dicom_identity(src: Path, dicom: bool, patient_id: str | None, study_uid: str | None,
                    template: Path | None) -> Any:
    """The patient of ``--dicom`` outputs of non-DICOM inputs, checked before predicting (None without --dicom)."""
    from deepmia.report.dicom_source import DicomIdentity, check_dicom_inputs

    identity = DicomIdentity(patient_id or None, study_uid or None, str(template) if template else None)
    if not dicom:
        if patient_id or study_uid or template:
            raise InvalidArgumentError("--patient-id, --study-uid and --template apply to --dicom outputs",
                                       fix="add --dicom or leave them out")
        return None
    identity = identity.resolved() if identity.given or identity.study_uid else identity
    check_dicom_inputs(src, identity)
    return identity


def _run_predictions(
    predictor: Any, src: Path, dst: Path, *, formats: list[str], options: dict[str, Any], figure: bool,
    dicom: bool = False, identity: Any = None,
) -> None:
    from deepmia.cli._common import console, err_console, progress
    from deepmia.engine.batch import run_batch
    from deepmia.report.dicom import dicom_writer
    from deepmia.report.results import result_figures

    writers = ([result_figures] if figure else []) + (
        [dicom_writer(predictor.model_dir, identity=identity, probabilities="probabilities" in formats)]
        if dicom else [])
    with progress() as bar:
        job = bar.add_task("predict", total=None)
        report = run_batch(predictor, src, dst, formats=formats, options={k: str(v) for k, v in options.items()},
                           progress=lambda d, t, _n: bar.update(job, completed=d, total=t), writers=writers)
    for name, reason in report.skipped:
        err_console.print(f"skipped {name}: {reason}", soft_wrap=True, markup=False, highlight=False)
    for note in report.warnings:
        err_console.print(f"warning: {note}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"{len(report.predicted)} of {report.total} predicted on {predictor.device} -> {dst} "
                  f"(record: {report.record.name})", soft_wrap=True, markup=False, highlight=False)
    if report.skipped:
        raise typer.Exit(1)


def add_commands(app: typer.Typer) -> None:
    """Add the learning commands to the root app."""
    from deepmia.cli import plan as plan_cli

    plan_cli.add_commands(app)
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
    app.command("predict")(predict)
    for name in TASK_CLI_MODULES:
        _task_module(name).add_commands(app=app, train=train_app, evaluate=evaluate_app)
