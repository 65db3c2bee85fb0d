"""Score detections against a detection dataset: COCO mAP@[.5:.95], mAP@0.5, per-class AP, AR, FROC and CPM.

Predictions are COCO results (``predictions.json`` as :class:`~deepmia.tasks.detect.predict.Predictor` writes
them, or any COCO results file): ``image_id`` is matched to the dataset's case ids, ``category_id`` to class
names through ``categories.json`` beside the predictions (without one, ids are the dataset's classes from 1).
The metrics are :mod:`deepmia.metrics.detection`'s (pycocotools-equal COCO numbers; bootstrap intervals over
images for mAP, mAP@0.5 and the CPM).

Bad input is refused with the file and the entry named: a category that is not a class of the dataset, a box
of negative width, a non-finite score, or predictions none of whose images are in the chosen split. Images of
the split without predictions count as images where nothing was found; predictions for images outside the
split are left out and counted. ``ignore`` reference boxes (VOC ``difficult``, COCO ``iscrowd``) are neither
found nor missed: they leave the reference, and detections of their class with half their area on one leave the
predictions (counted in ``detections_on_ignore_boxes``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.errors import InvalidArgumentError
from deepmia.metrics.detection import DetectionAccumulator, box_intersection
from deepmia.tasks.detect.data import case_targets, check_boxes

__all__ = ["read_predictions", "reference_of", "score", "evaluate", "evaluate_model", "froc_iou_default"]


def froc_iou_default(spatial_dims: int) -> float:
    """IoU for an FROC hit: 0.5 for 2D boxes, 0.1 for 3D (the looser criterion used for nodules)."""
    return 0.5 if spatial_dims == 2 else 0.1


def _entries(path: Path) -> tuple[list[dict[str, Any]], Path]:
    file = path / "predictions.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError("predictions file not found", path=file) from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"not valid JSON: {exc}", path=file) from exc
    if not isinstance(data, list):
        raise InvalidArgumentError("not COCO results: expected a list of detections", path=file)
    return data, file


def read_predictions(path: str | Path, class_names: Sequence[str], *, spatial_dims: int = 2
                     ) -> dict[str, dict[str, np.ndarray]]:
    """COCO results -> ``{image_id: {"boxes" (corners), "scores", "labels" (class indices)}}``.

    Raises:
        InvalidArgumentError: Unreadable file, an unknown category (id or name), a malformed box (wrong length,
            negative size, non-finite) or score.
    """
    data, file = _entries(Path(path))
    cats_file = file.parent / "categories.json"
    if cats_file.exists():
        try:
            cats = {int(c["id"]): str(c["name"]) for c in json.loads(cats_file.read_text())}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"not a COCO categories list: {exc}", path=cats_file) from exc
    else:
        cats = {i + 1: n for i, n in enumerate(class_names)}
    index = {n: i for i, n in enumerate(class_names)}
    unknown = sorted({n for n in cats.values() if n not in index})
    if unknown:
        raise InvalidArgumentError(f"categories {unknown} are not classes of the reference {list(class_names)}",
                                   path=cats_file, fix="predict with a model trained on these classes")
    d = spatial_dims
    rows: dict[str, list[tuple[list[float], float, int]]] = {}
    for i, e in enumerate(data):
        try:
            image_id, cat, bbox, score = str(e["image_id"]), int(e["category_id"]), e["bbox"], float(e["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"entry {i} is not a COCO result ({exc})", path=file) from exc
        if cat not in cats:
            raise InvalidArgumentError(f"entry {i}: unknown category_id {cat}; known {sorted(cats)}", path=file)
        b = np.asarray(bbox, float)
        if b.shape != (2 * d,) or not np.isfinite(b).all() or (b[d:] < 0).any() or not math.isfinite(score):
            raise InvalidArgumentError(f"entry {i} (image {image_id}): bbox {bbox} with score {score} is not "
                                       f"{2 * d} finite numbers [corner, size] with size >= 0", path=file)
        rows.setdefault(image_id, []).append(([*b[:d], *(b[:d] + b[d:])], score, index[cats[cat]]))
    return {k: {"boxes": np.array([r[0] for r in v]), "scores": np.array([r[1] for r in v]),
                "labels": np.array([r[2] for r in v], np.int64)} for k, v in rows.items()}


def _split_ids(dataset: Dataset, split: str) -> list[str]:
    if split == "all":
        return [c.id for c in dataset.cases]
    splits = dataset.splits
    if split == "test":
        ids = list(splits.test) if splits else []
    elif split in ("train", "val"):
        ids = list(getattr(splits.folds[0], split)) if splits and splits.folds else []
    else:
        raise InvalidArgumentError(f"split {split!r} is not test, val, train or all")
    if not ids:
        raise InvalidArgumentError(f"the dataset has no {split} cases", path=dataset.root)
    return ids


def reference_of(dataset: Dataset, ids: Sequence[str]) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """Reference boxes and labels of cases; ``ignore`` boxes go to ``ignore_boxes``/``ignore_labels`` (and are counted).

    Raises:
        DatasetError: A box outside its image (when the case records its shape).
    """
    names = dataset.spec.class_names()
    out, ignored = {}, 0
    for cid in ids:
        case = dataset.case(cid)
        if case.shape is not None:
            check_boxes(case, case.shape, path=dataset.root)
        boxes, labels, n = case_targets(case, names)
        ignored += n
        skip = [b for b in case.boxes or [] if b.ignore]
        out[cid] = {"boxes": boxes.astype(float), "labels": labels,
                    "ignore_boxes": np.array([b.box for b in skip], float).reshape(len(skip), boxes.shape[1]),
                    "ignore_labels": np.array([names.index(b.label) for b in skip], np.int64)}
    return out, ignored


def _drop_on_ignored(pred: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> tuple[dict, int]:
    """Remove detections lying on an ``ignore`` box of their class; returns the rest and how many were removed.

    A detection lies on one when half its area is inside it (as COCO's crowd regions).
    """
    ig, ig_lab = ref.get("ignore_boxes"), ref.get("ignore_labels")
    boxes = np.asarray(pred["boxes"], float)
    if ig is None or not len(ig) or not len(boxes):
        return dict(pred), 0
    d = boxes.shape[1] // 2
    inter = box_intersection(boxes, np.asarray(ig, float))
    area = np.prod(boxes[:, d:] - boxes[:, :d], axis=1)[:, None]
    on = (inter >= 0.5 * np.maximum(area, 1e-12)) & (np.asarray(pred["labels"])[:, None] == ig_lab[None, :])
    keep = ~on.any(axis=1)
    return {k: np.asarray(v)[keep] for k, v in pred.items()}, int((~keep).sum())


def score(predictions: Mapping[str, Mapping[str, np.ndarray]], reference: Mapping[str, Mapping[str, np.ndarray]],
          class_names: Sequence[str], *, froc_iou: float | None = None, n_resamples: int = 1000,
          seed: int = 0) -> dict[str, Any]:
    """COCO metrics and FROC/CPM (with bootstrap intervals over images) of predictions over the reference images."""
    dims = next((r["boxes"].shape[1] // 2 for r in reference.values() if r["boxes"].size), 2)
    iou = froc_iou_default(dims) if froc_iou is None else froc_iou
    acc = DetectionAccumulator(dict(enumerate(class_names)), hit="iou", iou_threshold=iou,
                               n_resamples=n_resamples, seed=seed)
    empty = {"boxes": np.zeros((0, 2 * dims)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)}
    dropped = 0
    for image_id, ref in reference.items():
        pred, n = _drop_on_ignored(predictions.get(image_id, empty), ref)
        dropped += n
        acc.update(pred, {"boxes": ref["boxes"], "labels": ref["labels"]}, image_id=image_id)
    out = acc.aggregate()
    out["froc_iou"] = iou
    out["detections_on_ignore_boxes"] = dropped
    out["images_without_predictions"] = sum(1 for k in reference if k not in predictions)
    return out


def evaluate(pred: str | Path, dataset_dir: str | Path, *, split: str = "test", out: str | Path | None = None,
             froc_iou: float | None = None, n_resamples: int = 1000) -> dict[str, Any]:
    """Score a predictions file against a detection dataset's ``split`` (``test``, ``val``, ``train``, ``all``).

    Writes ``out/metrics.json`` when ``out`` is given.

    Raises:
        InvalidArgumentError: Bad predictions (see the module), an unknown split, or no prediction for any image
            of the split.
        DatasetError: The dataset is not a detection dataset or is invalid.
    """
    dataset = Dataset.load(dataset_dir, check_files=False)
    if dataset.task != "detection":
        raise InvalidArgumentError(f"the reference is a {dataset.task} dataset, not detection", path=dataset.root)
    names = dataset.spec.class_names()
    ids = _split_ids(dataset, split)
    reference, ignored = reference_of(dataset, ids)
    dims = next((len(c.shape) for c in (dataset.case(i) for i in ids) if c.shape), 2)
    preds = read_predictions(pred, names, spatial_dims=dims)
    inside = {k: v for k, v in preds.items() if k in reference}
    if preds and not inside:
        raise InvalidArgumentError(f"no predicted image is in the {split} split (e.g. {next(iter(preds))!r})",
                                   path=pred, fix="image_id must be the case id (the image file's stem)")
    result = score(inside, reference, names, froc_iou=froc_iou, n_resamples=n_resamples)
    result.update(split=split, ignored_reference_boxes=ignored,
                  predicted_images_outside_split=len(preds) - len(inside))
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def evaluate_model(model_dir: str | Path, dataset: Dataset, *, split: str = "val", tta: bool | None = None,
                   n_resamples: int = 1000) -> dict[str, Any]:
    """Predict a dataset split with a model directory's :class:`Predictor` and score it."""
    from deepmia.tasks.detect.predict import Predictor

    predictor = Predictor(model_dir, tta=tta)
    ids = _split_ids(dataset, split)
    reference, ignored = reference_of(dataset, ids)
    preds = {}
    for cid in ids:
        boxes, scores, labels = predictor.predict_image(dataset.read_image(cid))
        preds[cid] = {"boxes": boxes, "scores": scores, "labels": labels}
    result = score(preds, reference, predictor.plan.class_names, n_resamples=n_resamples)
    result.update(split=split, tta=predictor.tta, ignored_reference_boxes=ignored)
    return result
