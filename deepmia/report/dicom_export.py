"""DICOM SEG/SR of an existing prediction folder (``deepmia export dicom PRED_DIR SOURCE OUT_DIR``).

A prediction folder is what ``deepmia predict`` wrote: ``run.json`` (the model, the inputs with their DICOM series
UIDs, the options) and the task's files: label maps (and ``probabilities/``) for a segmentation,
``predictions.csv`` for a classification, ``predictions.json`` + ``categories.json`` for a detection. Each predicted
input's result is rebuilt from those files on its source image (found in ``SOURCE`` by the series UID that
``run.json`` recorded; a non-DICOM input by its file name) and written by :func:`deepmia.report.dicom.dicom_outputs`.

Example:
    >>> from deepmia.report.dicom_export import export_prediction   # doctest: +SKIP
    >>> export_prediction("out/", "study/series3", "dicom_out/")    # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import InvalidArgumentError, SeriesError

__all__ = ["export_prediction", "read_record"]


def read_record(pred_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``run.json`` of a prediction folder.

    Raises:
        InvalidArgumentError: The folder does not exist or is not a prediction folder (no valid ``run.json``).
    """
    pred_dir = Path(pred_dir)
    fix = "give the output folder of `deepmia predict` (it holds run.json)"
    if not pred_dir.is_dir():
        raise InvalidArgumentError("no such prediction folder", path=pred_dir, fix=fix)
    path = pred_dir / "run.json"
    if not path.is_file():
        raise InvalidArgumentError("not a prediction folder: it holds no run.json", path=pred_dir, fix=fix)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"run.json is not valid JSON ({exc})", path=path, fix=fix) from None
    if not isinstance(record, dict) or "predictor" not in record or "predicted" not in record:
        raise InvalidArgumentError("run.json is not a prediction record (no predictor / predicted)", path=path,
                                   fix=fix)
    return record


def _model_dir(record: dict[str, Any]) -> Path | None:
    from deepmia.tasks import resolve_model

    info = record["predictor"]
    for spec in (info.get("model"), info.get("model_name")):
        if spec:
            try:
                return resolve_model(spec)
            except InvalidArgumentError:
                continue
    return None


def _source_image(entry: dict[str, Any], source: Path, single: bool) -> Any:
    """The source image of one predicted input: its DICOM series in ``source`` (by UID), or its file."""
    from deepmia.io import read_image
    from deepmia.io.dicom import read_series
    from deepmia.io.dicom.series import list_series

    uid = entry.get("series_uid")
    if uid or (source.is_dir() and single):
        found = list_series(source, recursive=True)
        chosen = [s for s in found if s.series_uid == uid] or (list(found) if single and len(found) == 1 else [])
        if not chosen:
            raise SeriesError(f"holds no DICOM series {uid or ''} that the prediction {entry['name']} was made on",
                              path=source, fix="give the series (or study) folder the prediction was made on")
        image = read_series(chosen[0].files)
        image.meta.update(source=str(source), source_files=[str(f) for f in chosen[0].files])
        return image
    path = source if source.is_file() else source / entry["name"]
    if not path.exists():
        raise InvalidArgumentError(f"the input {entry['name']} of the prediction is not there", path=path,
                                   fix="give the file (or folder of files) the prediction was made on")
    return read_image(path)


def _segment_result(name: str, pred_dir: Path, image: Any, model_dir: Path | None) -> Any:
    from deepmia.image import Image
    from deepmia.io import read_image
    from deepmia.tasks.segment.result import SegmentResult, float_map_name, label_map_name

    path = pred_dir / label_map_name(name, image.spatial_dims)
    if not path.is_file():
        raise InvalidArgumentError(f"the label map of {name} is missing", path=path)
    labels = read_image(path, kind="label")
    if model_dir is not None:
        plan = json.loads((model_dir / "plan.json").read_text())
        names = {int(k): str(v) for k, v in plan.get("labels", {}).items() if int(k) != 0}
    else:
        names = {int(v): f"label_{int(v)}" for v in np.unique(labels.array) if v != 0}
    meta = {**image.meta, "case_id": image.meta.get("case_id") or labels.meta.get("case_id")}
    probs_path = pred_dir / "probabilities" / float_map_name(name, image.spatial_dims)
    probs = read_image(probs_path) if probs_path.is_file() else None
    return SegmentResult(Image(labels.array, labels.affine, kind="label", meta=meta), names,
                         probs, image=image)


def _classify_result(name: str, pred_dir: Path, image: Any) -> Any:
    from deepmia.io import image_stem
    from deepmia.tasks.classify.result import ClassifyResult

    path = pred_dir / "predictions.csv"
    if not path.is_file():
        raise InvalidArgumentError("a classification prediction folder without predictions.csv", path=pred_dir)
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("file") == name]
    if not rows:
        raise InvalidArgumentError(f"predictions.csv has no row for {name}", path=path)
    row = rows[0]
    classes = [k[len("prob_"):] for k in row if k.startswith("prob_")]
    probabilities = np.array([float(row[f"prob_{c}"]) for c in classes])
    decided = [c for c in row["label"].split(";") if c in classes]
    return ClassifyResult(case=image_stem(name), class_names=classes, probabilities=probabilities,
                          decision=classes.index(decided[0]) if len(decided) == 1 else None, label=row["label"],
                          uncertainty=float(row.get("uncertainty") or 0.0),
                          low_confidence=bool(int(row.get("low_confidence") or 0)), image=image)


def _detect_result(name: str, pred_dir: Path, image: Any, record: dict[str, Any]) -> Any:
    from deepmia.io import image_stem
    from deepmia.tasks.detect.result import DetectResult

    boxes_path, cats_path = pred_dir / "predictions.json", pred_dir / "categories.json"
    if not boxes_path.is_file() or not cats_path.is_file():
        raise InvalidArgumentError("a detection prediction folder without predictions.json and categories.json",
                                   path=pred_dir)
    case = image_stem(name)
    entries = [e for e in json.loads(boxes_path.read_text()) if e.get("image_id") == case]
    classes = [c["name"] for c in sorted(json.loads(cats_path.read_text()), key=lambda c: c["id"])]
    d = image.spatial_dims
    boxes = np.array([[*e["bbox"][:d], *(np.add(e["bbox"][:d], e["bbox"][d:]))] for e in entries],
                     dtype=float).reshape(-1, 2 * d)
    min_score = record["predictor"].get("options", {}).get("min_score")
    return DetectResult(case=case, boxes=boxes, scores=np.array([e["score"] for e in entries], dtype=float),
                        labels=np.array([e["category_id"] - 1 for e in entries], dtype=int), class_names=classes,
                        affine=image.affine, min_score=float(min_score) if min_score is not None else 0.3,
                        image=image)


def _recorded_identity(record: dict[str, Any]) -> Any:
    """The patient ``predict --dicom`` was given for non-DICOM inputs (run.json options), or None."""
    from deepmia.report.dicom_source import DicomIdentity

    options = record.get("options", {})
    values = [options.get(k) for k in ("dicom_patient_id", "dicom_study_uid", "dicom_template")]
    values = [None if v in (None, "", "None") else str(v) for v in values]
    identity = DicomIdentity(*values)
    return identity if identity.given else None


def export_prediction(
    pred_dir: str | os.PathLike[str], source: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
    identity: Any = None, probabilities: bool = False,
) -> list[Path]:
    """Write the DICOM SEG/SR of every input of a prediction folder into ``out_dir``.

    Args:
        pred_dir: The output folder of ``deepmia predict``.
        source: The DICOM series (or study) folder the prediction was made on; for a non-DICOM input, that file
            (or its folder) with ``identity``.
        out_dir: Where ``<name>.seg.dcm`` / ``<name>.sr.dcm`` (and a made source series) go.
        identity: A :class:`~deepmia.report.dicom_source.DicomIdentity` for non-DICOM inputs (default: the one
            ``predict --dicom`` was given, from run.json, so the objects land in the same study).
        probabilities: Also a fractional SEG of ``probabilities/`` (segmentation predicted with them).

    Raises:
        InvalidArgumentError: ``pred_dir`` is not a prediction folder, or its files are missing.
        SeriesError: ``source`` does not hold the series the prediction was made on.
        GeometryError: A prediction's grid does not match its source series.
    """
    from deepmia.io import image_stem
    from deepmia.report.dicom import dicom_outputs

    pred_dir, source = Path(pred_dir), Path(source)
    record = read_record(pred_dir)
    task = record["predictor"].get("task")
    if task not in ("segment", "classify", "detect"):
        raise InvalidArgumentError(f"no DICOM output for a {task} prediction", path=pred_dir)
    if not source.exists():
        raise InvalidArgumentError("no such source series or file", path=source)
    model_dir = _model_dir(record)
    if identity is None or not identity.given:
        identity = _recorded_identity(record) or identity
    inputs = {i["name"]: i for i in record.get("inputs", [])}
    written: list[Path] = []
    predicted = list(record["predicted"])
    for name in predicted:
        entry = inputs.get(name, {"name": name})
        image = _source_image(entry, source, single=len(predicted) == 1)
        image.meta["case_id"] = image_stem(name)
        if task == "segment":
            result = _segment_result(name, pred_dir, image, model_dir)
        elif task == "classify":
            result = _classify_result(name, pred_dir, image)
        else:
            result = _detect_result(name, pred_dir, image, record)
        written += dicom_outputs(name, result, out_dir, model_dir=model_dir, identity=identity,
                                 probabilities=probabilities, subfolder="")
    return written
