"""The detection :class:`DetectResult`: boxes in the input's pixels (and world mm in 3D), scores and classes."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepmia.image import Image
from deepmia.tasks._base import Result

__all__ = ["DetectResult", "to_coco_results", "world_boxes", "categories_of"]


def world_boxes(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Axis-aligned world (RAS mm) bounds of voxel-edge corner boxes ``(N, 6)`` under a 4x4 affine.

    Voxel ``i`` spans ``[i, i + 1)`` in box coordinates and has its centre at index ``i`` in the affine, so a
    corner ``c`` maps to ``affine @ (c - 0.5)``; the bounds of the 8 mapped corners are returned (an oblique
    affine gives the enclosing box).
    """
    if boxes.size == 0:
        return np.zeros((0, 6))
    lo, hi = boxes[:, :3] - 0.5, boxes[:, 3:] - 0.5
    corners = np.stack([np.where(np.array(bits, bool), hi, lo) for bits in itertools.product((0, 1), repeat=3)],
                       axis=1)  # (N, 8, 3)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return np.concatenate([world.min(axis=1), world.max(axis=1)], axis=1)


def to_coco_results(image_id: str, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *,
                    affine: np.ndarray | None = None) -> list[dict]:
    """COCO result entries: ``bbox`` ``[x, y, w, h]`` (3D ``[x, y, z, w, h, d]``), ``category_id`` = class + 1.

    For 3D boxes with the image's ``affine``, ``bbox_world`` adds the box in world coordinates: RAS millimetres
    ``[x0, y0, z0, x1, y1, z1]`` (:func:`world_boxes`).
    """
    d = boxes.shape[1] // 2 if boxes.size else 2
    rows = [{"image_id": image_id, "category_id": int(lab) + 1,
             "bbox": [round(float(v), 2) for v in (*b[:d], *(b[d:] - b[:d]))], "score": round(float(s), 5)}
            for b, s, lab in zip(boxes, scores, labels, strict=True)]
    if d == 3 and affine is not None:
        for row, w in zip(rows, world_boxes(boxes, np.asarray(affine, float)), strict=True):
            row["bbox_world"] = [round(float(v), 2) for v in w]
    return rows


def categories_of(class_names: Sequence[str]) -> list[dict[str, Any]]:
    """COCO ``categories``: ids from 1 in class order."""
    return [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]


@dataclass
class DetectResult(Result):
    """The detections in one image.

    Attributes:
        case: The case id (input name without its image suffix).
        boxes: ``(N, 2d)`` voxel-edge corner boxes ``[x0, y0, (z0,) x1, y1, (z1)]`` in the input's pixels.
        scores: ``(N,)`` scores, highest first.
        labels: ``(N,)`` class indices.
        class_names: Class names by index.
        affine: The input's affine (world coordinates of 3D boxes).
        min_score: Boxes below this score are left out of figures and counts (all are kept in the COCO results).
        image: The input image (for figures; not written).
        warnings: Notes from checking the input against the model.
    """

    task = "detect"
    case: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    affine: np.ndarray
    min_score: float = 0.3
    image: Image | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    def kept(self) -> np.ndarray:
        """Indices of the detections at or above ``min_score``."""
        return np.flatnonzero(self.scores >= self.min_score)

    def coco(self) -> list[dict[str, Any]]:
        """COCO result entries of every box (see :func:`deepmia.tasks.detect.predict.to_coco_results`)."""
        return to_coco_results(self.case, self.boxes, self.scores, self.labels, affine=self.affine)

    def measurements(self) -> list[dict[str, Any]]:
        """Count per class at ``min_score``, then each kept detection's score (target ``<class> <n>``)."""
        keep = self.kept()
        rows = [{"case": self.case, "target": c, "quantity": "count", "value": int((self.labels[keep] == k).sum()),
                 "unit": ""} for k, c in enumerate(self.class_names)]
        for n, i in enumerate(keep, start=1):
            rows.append({"case": self.case, "target": f"{self.class_names[self.labels[i]]} {n}", "quantity": "score",
                         "value": round(float(self.scores[i]), 5), "unit": ""})
        return rows

    def summary(self) -> dict[str, Any]:
        """Case, counts per class at ``min_score`` and the kept detections."""
        keep = self.kept()
        return {"task": self.task, "case": self.case, "min_score": self.min_score,
                "counts": {c: int((self.labels[keep] == k).sum()) for k, c in enumerate(self.class_names)},
                "detections": [self.coco()[i] for i in keep], "warnings": self.warnings}

    def write(self, dst: str | os.PathLike[str], name: str, *, formats: Sequence[str] = ()) -> list[Path]:
        """Nothing per case: the boxes of all cases go into one ``predictions.json`` (:meth:`write_table`)."""
        return []

    has_table = True

    def light(self) -> DetectResult:
        """This result without the input image (and saliency map)."""
        return replace(self, image=None)

    @classmethod
    def write_table(cls, results: Sequence[tuple[str, Result]], dst: str | os.PathLike[str]) -> list[Path]:
        """COCO results of every case in ``predictions.json`` and the classes in ``categories.json``."""
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        entries = [e for _, r in results for e in cast(DetectResult, r).coco()]
        (dst / "predictions.json").write_text(json.dumps(entries) + "\n")
        names = cast(DetectResult, results[0][1]).class_names
        (dst / "categories.json").write_text(json.dumps(categories_of(names), indent=1) + "\n")
        return [dst / "predictions.json", dst / "categories.json"]
