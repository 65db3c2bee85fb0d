"""Read a prediction folder (what ``deepmia predict`` or ``deepmia register`` wrote) back into task results.

``run.json`` names the model directory and the inputs; each predicted input is read again from its source (so
the report shows the image and its DICOM header) and paired with its outputs: the label map of a segmentation,
the row of ``predictions.csv`` of a classification, the COCO boxes of ``predictions.json`` of a detection, and
``warped.nii.gz`` with ``registration.json`` of a registration.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import DeepmiaError, InvalidArgumentError, ReadError
from deepmia.image import Image

__all__ = ["PredictionFolder", "Registration", "read_prediction_folder", "read_input"]

_NOT_A_FOLDER_FIX = "give the output folder of `deepmia predict MODEL IN OUT`, which holds run.json"


@dataclass
class Registration:
    """A registered pair as its folder holds it: the fixed image, the moving one before and after alignment."""

    fixed: Image
    before: Image
    after: Image
    summary: dict[str, Any]
    task: str = "register"

    @classmethod
    def of(cls, fixed: Image, moving: Image, after: Image, summary: dict[str, Any]) -> Registration:
        """The pair with the moving image resampled onto the fixed grid as it was before alignment."""
        from deepmia.processing.spatial_transform import SpatialTransform

        return cls(fixed, SpatialTransform.identity(fixed.spatial_dims).apply(moving, reference=fixed), after, summary)


@dataclass
class PredictionFolder:
    """A prediction folder read back.

    Attributes:
        path: The folder.
        record: ``run.json``.
        task: The task of the prediction (``segment``, ``classify``, ``detect``, ``register``).
        model_dir: The model directory that predicted (None for a classical registration).
        cases: ``(name, result)`` per predicted input: a task :class:`~deepmia.tasks.Result`, or a
            :class:`Registration`.
        predictor: The classification model's predictor (for its saliency maps); None for other tasks.
    """

    path: Path
    record: dict[str, Any]
    task: str
    model_dir: Path | None
    cases: list[tuple[str, Any]] = field(default_factory=list)
    predictor: Any = None


def _record(folder: Path) -> dict[str, Any]:
    """``run.json`` (read as ``deepmia export dicom`` reads it), with the inputs the report reads again."""
    from deepmia.report.dicom_export import read_record

    record = read_record(folder)
    if not isinstance(record.get("inputs"), list):
        raise InvalidArgumentError("run.json lists no inputs", path=folder / "run.json", fix=_NOT_A_FOLDER_FIX)
    return record


def _model_dir(record: dict[str, Any], folder: Path, given: str | os.PathLike[str] | None) -> Path | None:
    """The model directory: ``given``, else run.json's (as written, or the shipped model of that name)."""
    from deepmia.tasks import resolve_model

    if given is not None:
        return resolve_model(given)
    predictor = record["predictor"]
    model = predictor.get("model")
    if not model:
        return None
    for candidate in (Path(model), folder / model):
        if (candidate / "plan.json").is_file():
            return candidate
    try:
        return resolve_model(predictor.get("model_name") or Path(model).name)
    except DeepmiaError:
        raise InvalidArgumentError(f"run.json names the model {model!r}, which is not found here",
                                   path=folder / "run.json", fix="give the model directory with --model") from None


def read_input(entry: dict[str, Any]) -> Image:
    """The input image a run.json entry names (a file, or one DICOM series of a folder).

    Raises:
        ReadError: The input is gone or no longer holds that series.
    """
    from deepmia.engine.batch import InputItem

    path = Path(entry["path"])
    if not path.exists():
        where = "" if path.is_absolute() else "; the path is relative: run deepmia report where deepmia predict ran"
        raise ReadError("the prediction's input is no longer there", path=path,
                        fix=f"the report reads the images again: keep the inputs where run.json says{where}")
    uid = entry.get("series_uid")
    if not uid:
        return InputItem(path, entry["name"]).read()
    from deepmia.io.dicom.series import list_series

    info = next((s for s in list_series(path, recursive=True) if s.series_uid == uid), None)
    if info is None:
        raise ReadError(f"the folder no longer holds the series {uid}", path=path)
    image = InputItem(path, entry["name"], series_uid=uid, files=list(info.files)).read()
    if info.series_number is not None:
        image.meta.setdefault("series_number", info.series_number)
    return image


def _entries(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(output name, input entry) of every predicted input."""
    by_name = {e["name"]: e for e in record["inputs"]}
    predicted = record.get("predicted") or []
    if len(predicted) == 1 and len(by_name) == 1:  # one input written under another name (DST named a file)
        return [(predicted[0], next(iter(by_name.values())))]
    return [(n, by_name[n]) for n in predicted if n in by_name]


def _segment(folder: Path, name: str, image: Image, model_dir: Path | None) -> Any:
    from deepmia.io import read_image
    from deepmia.tasks.segment.result import SegmentResult, label_map_name

    path = folder / label_map_name(name, image.spatial_dims)
    if not path.is_file():
        raise InvalidArgumentError(f"the label map of {name} is missing", path=path, fix=_NOT_A_FOLDER_FIX)
    labels = read_image(path, kind="label")
    labels = image.with_geometry(labels.array, labels.affine) if labels.spatial_shape == image.spatial_shape else labels
    plan = json.loads((model_dir / "plan.json").read_text()) if model_dir is not None else {}
    names = {int(k): str(v) for k, v in (plan.get("labels") or {}).items() if int(k) != 0}
    if not names:
        names = {int(v): f"label {int(v)}" for v in np.unique(labels.array) if v != 0}
    labels = Image(labels.array.astype(np.int16), labels.affine, kind="label", meta=dict(image.meta))
    return SegmentResult(labels, names, image=image)


def _table(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InvalidArgumentError(f"{path.name} is missing", path=path, fix=_NOT_A_FOLDER_FIX)
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _classify(folder: Path, name: str, image: Image, threshold: dict[str, Any] | None) -> Any:
    from deepmia.io import image_stem
    from deepmia.tasks.classify.result import ClassifyResult

    rows = [r for r in _table(folder / "predictions.csv") if r.get("file") == name]
    if not rows:
        raise InvalidArgumentError(f"predictions.csv has no row for {name}", path=folder / "predictions.csv")
    row = rows[0]
    classes = [k[len("prob_"):] for k in row if k.startswith("prob_")]
    probs = np.array([float(row[f"prob_{c}"]) for c in classes])
    decision = classes.index(row["label"]) if row["label"] in classes else None
    warnings = [w for w in (row.get("input_warnings") or "").split("; ") if w]
    return ClassifyResult(image_stem(name), classes, probs, decision, row["label"], float(row["uncertainty"]),
                          bool(int(row["low_confidence"])), threshold=threshold, image=image,
                          saliency=_stored_saliency(folder, image_stem(name), image), warnings=warnings)


def _stored_saliency(folder: Path, stem: str, image: Image) -> Image | None:
    """The Grad-CAM map ``deepmia explain`` stored for a volume (``<stem>_gradcam.nii.gz``) on the image's grid.

    A 2D explanation is stored as an overlay picture only, so its map is computed again.
    """
    from deepmia.io import read_image

    path = folder / f"{stem}_gradcam.nii.gz"
    if image.spatial_dims != 3 or not path.is_file():
        return None
    saliency = read_image(path)
    return saliency if saliency.spatial_shape == image.spatial_shape else None


def _detect(folder: Path, name: str, image: Image, min_score: float) -> Any:
    from deepmia.io import image_stem
    from deepmia.tasks.detect.result import DetectResult

    case = image_stem(name)
    for needed in ("predictions.json", "categories.json"):
        if not (folder / needed).is_file():
            raise InvalidArgumentError(f"{needed} is missing", path=folder / needed, fix=_NOT_A_FOLDER_FIX)
    entries = [e for e in json.loads((folder / "predictions.json").read_text()) if e["image_id"] == case]
    classes = [c["name"] for c in sorted(json.loads((folder / "categories.json").read_text()), key=lambda c: c["id"])]
    d = image.spatial_dims
    boxes = np.array([[*e["bbox"][:d], *(np.add(e["bbox"][:d], e["bbox"][d:]))] for e in entries], float)
    scores = np.array([e["score"] for e in entries], float)
    order = np.argsort(-scores, kind="stable")
    labels = np.array([e["category_id"] - 1 for e in entries], int)
    return DetectResult(case, boxes.reshape(-1, 2 * d)[order], scores[order], labels[order], classes,
                        image.affine, min_score=min_score, image=image)


def _registration(folder: Path, record: dict[str, Any]) -> Registration:
    from deepmia.io import read_image

    roles = {e["name"]: e for e in record["inputs"]}
    if "fixed" not in roles or "moving" not in roles:
        raise InvalidArgumentError("run.json of a registration names no fixed and moving input",
                                   path=folder / "run.json")
    fixed, moving = read_input(roles["fixed"]), read_input(roles["moving"])
    warped_path, summary_path = folder / "warped.nii.gz", folder / "registration.json"
    if not warped_path.is_file():
        raise InvalidArgumentError("warped.nii.gz is missing", path=warped_path, fix=_NOT_A_FOLDER_FIX)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Registration.of(fixed, moving, read_image(warped_path), summary)


def read_prediction_folder(folder: str | os.PathLike[str], *, model_dir: str | os.PathLike[str] | None = None,
                           ) -> PredictionFolder:
    """Read a prediction folder back: its record, model directory and one result per predicted input.

    Args:
        folder: The output folder of ``deepmia predict`` (or ``deepmia register``).
        model_dir: The model directory, when the one run.json names is not found here.

    Raises:
        InvalidArgumentError: Not a prediction folder (no or bad run.json, a missing output), or its model is
            not found.
        ReadError: An input the run read is gone.
    """
    folder = Path(folder)
    record = _record(folder)
    task = str(record["predictor"].get("task", ""))
    model = _model_dir(record, folder, model_dir)
    found = PredictionFolder(folder, record, task, model)
    if task == "register":
        found.cases.append(("registration", _registration(folder, record)))
        return found
    if task not in ("segment", "classify", "detect"):
        raise InvalidArgumentError(f"run.json names task {task!r}, which has no report", path=folder / "run.json")
    options = record["predictor"].get("options") or {}
    if task == "classify":
        from deepmia.tasks import load_predictor

        found.predictor = load_predictor(model, device="cpu")  # its threshold now, its Grad-CAM later
    threshold = _threshold(found.predictor) if task == "classify" else None
    for name, entry in _entries(record):
        image = read_input(entry)
        if task == "segment":
            found.cases.append((name, _segment(folder, name, image, model)))
        elif task == "classify":
            found.cases.append((name, _classify(folder, name, image, threshold)))
        else:
            found.cases.append((name, _detect(folder, name, image, float(options.get("min_score", 0.3)))))
    if not found.cases:
        raise InvalidArgumentError("run.json lists no predicted input", path=folder / "run.json")
    return found



def _threshold(predictor: Any) -> dict[str, Any] | None:
    """The operating threshold, its class and the low-confidence flag, as the predictor applies them."""
    info = predictor.threshold_info()
    flag = float(getattr(predictor, "uncertainty_flag", float("inf")))
    return {**(info or {}), **({"uncertainty_flag": flag} if np.isfinite(flag) else {})} or None
