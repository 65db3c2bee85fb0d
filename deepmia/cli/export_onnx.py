"""Commands: ``deepmia export onnx``: a model directory's networks as ONNX files next to their weights (issue 15).

Files written into MODEL_DIR: ``fold_<k>/model.onnx`` per trained fold (float32), with ``--quantize fp16``
``fold_<k>/model_fp16.onnx``, with ``--quantize int8`` ``fold_<k>/model_int8.onnx`` (static, calibrated on the
model's training cases) and ``fold_<k>/model_int8_calibration.json`` (the cases); ``onnx.json`` records the
export. Predict with them: ``deepmia predict MODEL_DIR IN OUT --runtime onnx|openvino [--precision int8]``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import typer

from deepmia.errors import InvalidArgumentError


def _training_ids(model_dir: Path) -> list[str]:
    """The training case ids a model directory's split.json records (fold 0's for a cross-validated model)."""
    path = model_dir / "split.json"
    split = json.loads(path.read_text()) if path.is_file() else {}
    ids = split.get("train") or (split.get("folds") or {}).get("0", {}).get("train") or []
    if not ids:
        raise InvalidArgumentError("split.json names no training cases to calibrate INT8 on", path=path,
                                   fix="export without --quantize int8, or retrain the model")
    return [str(i) for i in ids]


def _pick(ids: list[str], n: int) -> list[str]:
    """``n`` ids spread evenly over ``ids`` (all of them when there are fewer)."""
    if len(ids) <= n:
        return ids
    return [ids[round(i * (len(ids) - 1) / max(n - 1, 1))] for i in range(n)]


def calibration_images(model_dir: Path, source: Path, n: int) -> tuple[list[str], list[Any]]:
    """``n`` of the model's training cases read from ``source``: a deepmia dataset folder or a folder of images.

    Raises:
        InvalidArgumentError: ``source`` is missing or holds none of the model's training cases.
    """
    from deepmia.io import image_stem, is_image_file, read_image

    train = _training_ids(model_dir)
    if (source / "dataset.json").is_file():
        from deepmia.data.dataset import Dataset

        dataset = Dataset.load(source, check_files=False)
        known = {c.id for c in dataset.cases}
        ids = _pick([i for i in train if i in known], n)
        return ids, [dataset.read_image(i) for i in ids]
    if not source.is_dir():
        raise InvalidArgumentError("no such calibration folder", path=source,
                                   fix="pass --calibration DATASET (a deepmia dataset, or a folder of its images)")
    files = {image_stem(p.name): p for p in sorted(source.rglob("*")) if p.is_file() and is_image_file(p)}
    ids = _pick([i for i in train if i in files], n)
    if not ids:
        raise InvalidArgumentError(f"none of the {len(files)} image files is a training case of this model "
                                   f"(such as {train[0]!r})", path=source,
                                   fix="pass the dataset the model was trained on")
    return ids, [read_image(files[i]) for i in ids]


def export_onnx(
    model_dir: Path = typer.Argument(..., help="A trained model directory, or a shipped model's name."),
    quantize: str = typer.Option(None, "--quantize", help="Also write a quantised model: fp16 or int8 (static)."),
    calibration: Path = typer.Option(
        None, "--calibration", help="INT8: the dataset the model was trained on (a deepmia dataset folder, or a "
                                    "folder of its images); its training cases (split.json) calibrate."),
    calibration_cases: int = typer.Option(16, "--calibration-cases", help="INT8: training cases to calibrate on."),
) -> None:
    """Export the model's networks to ONNX (dynamic axes where the network allows), checked against torch.

    Writes fold_<k>/model.onnx for each trained fold, fold_<k>/model_fp16.onnx or model_int8.onnx (with
    model_int8_calibration.json naming the calibration cases) and onnx.json; prints each file's largest absolute
    difference from torch on a random input. Exit status: 0 exported, 2 bad input or a network ONNX cannot express.
    """
    from deepmia._validate import look_up_option
    from deepmia.cli._common import console
    from deepmia.engine.onnx_export import export_model, record_inputs
    from deepmia.tasks import load_predictor, resolve_model, shipped_models, task_of_model

    model_dir = resolve_model(model_dir)
    if model_dir.resolve() in {p.resolve() for p in shipped_models()}:
        raise InvalidArgumentError("a shipped model's folder belongs to the installed package: export a copy of it",
                                   path=model_dir, fix=f"cp -r {model_dir} my_model && deepmia export onnx my_model")
    quantize = None if quantize is None else look_up_option(quantize, ("fp16", "int8"), what="--quantize")
    if quantize != "int8" and calibration is not None:
        raise InvalidArgumentError("--calibration is only used with --quantize int8", fix="add --quantize int8")
    if quantize == "int8" and calibration is None:
        raise InvalidArgumentError("INT8 quantisation calibrates on the model's training cases: give their dataset",
                                   path=model_dir, fix="add --calibration DATASET")
    task = task_of_model(model_dir)
    params = inspect.signature(task.predictor().__init__).parameters
    predictor = load_predictor(model_dir, **({"tta": False} if "tta" in params else {}))
    specs = predictor.onnx_networks()
    feeds, ids, source = None, [], None
    if quantize == "int8":
        if getattr(getattr(predictor, "plan", None), "tabular", None) is not None:
            raise InvalidArgumentError("INT8 calibration of an image + clinical model is not supported yet",
                                       path=model_dir, fix="export float32 (no --quantize) or --quantize fp16")
        ids, images = calibration_images(model_dir, Path(calibration), calibration_cases)
        inputs = list(zip(images[:-1], images[1:], strict=True)) if task.name == "register" else images
        feeds = record_inputs(specs, predictor.predict, inputs)
        source = str(calibration)
    record = export_model(specs, model_dir, quantize=quantize, calibration=feeds, calibration_cases=ids,
                          calibration_source=source)
    for name in (s.name for s in specs):
        for kind, f in record["networks"][name]["files"].items():
            console.print(f"{model_dir / name / f['file']}: {kind}, {f['bytes'] / 2**20:.1f} MiB, max abs diff from "
                          f"torch {f['max_abs_diff']:.2e}", soft_wrap=True, markup=False, highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("onnx")(export_onnx)
