"""The detection ``Predictor``: a model directory in, boxes in the input's own pixels out.

Per image: normalise, rescale by the plan's factor, run the detector (MONAI's sliding-window inferer when the
image is larger than the network input), for each mirror of the test-time augmentation mirror the boxes back,
fuse the passes (and the folds of an ensemble) by weighted box fusion, map the boxes back to image pixels and
clip them to the image. The detector's own per-class NMS (MONAI ``batched_nms``) runs inside each pass.

``predict_path`` writes COCO results: ``predictions.json`` (``image_id`` = the file's stem, ``category_id``,
``bbox`` = ``[x, y, width, height]`` in pixels, ``score``; 3D: ``[x, y, z, w, h, d]`` in voxels plus
``bbox_world``, the box in RAS millimetres) and ``categories.json``.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.engine.runtime import autocast, configure_threads
from deepmia.errors import DeepmiaError, InvalidArgumentError
from deepmia.image import Image
from deepmia.metrics.detection import box_iou
from deepmia.tasks.detect.data import mirror_boxes, normalize, resize
from deepmia.tasks.detect.plan import DetectPlan, load_plan

__all__ = ["Predictor", "weighted_box_fusion", "mirror_passes", "detect_passes", "fuse", "detect_arrays",
           "to_coco_results", "world_boxes", "categories_of", "available_folds"]


def available_folds(model_dir: Path) -> list[int]:
    """Folds with trained weights in a model directory."""
    return sorted(int(p.parent.name.split("_")[1]) for p in model_dir.glob("fold_*/model_best.pt"))


def mirror_passes(axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Mirror combinations of the test-time augmentation.

    Every subset of ``axes`` in 2D; in 3D no mirror and each axis alone (4 passes instead of 8).
    """
    axes = list(axes)
    if spatial_dims == 2:
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    return [(), *[(a,) for a in axes]]


def weighted_box_fusion(
    results: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, iou_threshold: float = 0.55,
    skip_below: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box fusion (Solovyev et al., 2021) of several predictions of one image, 2D or 3D.

    Boxes of one class, highest score first, join the first cluster whose fused box they overlap with IoU above
    ``iou_threshold`` (else start one). A cluster's box is the score-weighted mean of its boxes' corners; its
    score is their mean score times ``min(n, P) / P`` for ``n`` boxes from ``P`` predictions, so a box found by
    one pass of four keeps a quarter of its score.

    Args:
        results: ``(boxes (N, 2d), scores (N,), labels (N,))`` per prediction (pass or model).
        iou_threshold: Overlap at which a box joins a cluster.
        skip_below: Boxes scoring below this are dropped first.

    Returns:
        Fused ``(boxes, scores, labels)``, highest score first.
    """
    n_pred = len(results)
    if n_pred == 0:
        raise InvalidArgumentError("weighted box fusion needs at least one prediction")
    dims2 = next((np.asarray(r[0]).shape[1] for r in results if np.ndim(r[0]) == 2), 4)
    boxes = np.concatenate([np.asarray(r[0], np.float64).reshape(-1, dims2) for r in results])
    scores = np.concatenate([np.asarray(r[1], np.float64) for r in results])
    labels = np.concatenate([np.asarray(r[2], np.int64) for r in results])
    keep = scores >= skip_below
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    out_b, out_s, out_l = [], [], []
    for c in np.unique(labels):
        sel = np.flatnonzero(labels == c)
        sel = sel[np.argsort(-scores[sel], kind="stable")]
        fused: list[np.ndarray] = []
        members: list[list[int]] = []
        for i in sel:
            if fused:
                iou = box_iou(boxes[i][None], np.stack(fused))[0]
                j = int(iou.argmax())
                if iou[j] > iou_threshold:
                    members[j].append(i)
                    w = scores[members[j]]
                    fused[j] = (boxes[members[j]] * w[:, None]).sum(axis=0) / w.sum()
                    continue
            fused.append(boxes[i].copy())
            members.append([i])
        for box, idx in zip(fused, members, strict=True):
            out_b.append(box)
            out_s.append(scores[idx].mean() * min(len(idx), n_pred) / n_pred)
            out_l.append(c)
    if not out_b:
        return np.zeros((0, dims2)), np.zeros(0), np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(out_s), kind="stable")
    return np.stack(out_b)[order], np.asarray(out_s)[order], np.asarray(out_l, np.int64)[order]


def _configure(detector: torch.nn.Module, plan: DetectPlan) -> None:
    inf = plan.inference
    detector.set_box_selector_parameters(
        score_thresh=inf.score_threshold, topk_candidates_per_level=inf.topk_per_level,
        nms_thresh=inf.nms_threshold, detections_per_img=inf.max_detections,
    )
    detector.set_sliding_window_inferer(
        roi_size=plan.input_size, sw_batch_size=1, overlap=inf.window_overlap, mode="constant",
        padding_mode="constant", cval=0.0, progress=False,
    )


Result = tuple[np.ndarray, np.ndarray, np.ndarray]


def detect_passes(
    detectors: Sequence[torch.nn.Module], arrays: Sequence[np.ndarray], plan: DetectPlan, *, tta: bool,
    precision: str | None = None, batch_size: int = 8,
) -> list[list[Result]]:
    """Every prediction (mirror pass x detector) of network-space arrays ``(C, *spatial)``, in network pixels.

    Images of one size within ``input_size`` run in batches; a larger one runs through MONAI's sliding-window
    inferer. Boxes of a mirrored pass are mirrored back. The first prediction of each image is the unmirrored
    pass of the first detector.
    """
    passes = mirror_passes(plan.augmentation.mirror_axes, plan.spatial_dims) if tta else [()]
    precision = precision or plan.schedule.precision
    per_image: list[list[Result]] = [[] for _ in arrays]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape[1:]), []).append(i)
    for det in detectors:
        _configure(det, plan)
        det.eval()
        for shape, idx in groups.items():
            windowed = any(s > m for s, m in zip(shape, plan.input_size, strict=True))
            step = 1 if windowed else batch_size
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                for mirror in passes:
                    x = torch.from_numpy(np.stack([arrays[i] for i in chunk]))
                    if mirror:
                        x = torch.flip(x, dims=[2 + a for a in mirror])  # (B, C, *spatial)
                    with torch.no_grad(), autocast(precision):
                        outs = det(x, use_inferer=windowed)
                    for i, out in zip(chunk, outs, strict=True):
                        boxes = out["box"].float().numpy().astype(np.float64)
                        for a in mirror:
                            boxes = mirror_boxes(boxes, a, shape[a])
                        per_image[i].append((boxes, out["label_scores"].float().numpy(),
                                             out["label"].numpy().astype(np.int64)))
    return per_image


def fuse(predictions: Sequence[Result], *, iou_threshold: float, max_detections: int) -> Result:
    """One prediction as it is; several by :func:`weighted_box_fusion`, cut to the ``max_detections`` best."""
    if len(predictions) == 1:
        return predictions[0]
    boxes, scores, labels = weighted_box_fusion(predictions, iou_threshold=iou_threshold)
    return boxes[:max_detections], scores[:max_detections], labels[:max_detections]


def detect_arrays(
    detectors: Sequence[torch.nn.Module], arrays: Sequence[np.ndarray], plan: DetectPlan, *, tta: bool,
    precision: str | None = None, batch_size: int = 8,
) -> list[Result]:
    """Detect objects in network-space arrays: :func:`detect_passes` fused with the plan's WBF threshold."""
    inf = plan.inference
    return [fuse(p, iou_threshold=inf.wbf_iou, max_detections=inf.max_detections)
            for p in detect_passes(detectors, arrays, plan, tta=tta, precision=precision, batch_size=batch_size)]


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


def _figure(image: Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, names: Sequence[str],
            path: Path, *, min_score: float = 0.3) -> None:
    """The image with its boxes (score >= ``min_score``) drawn and labelled, as PNG."""
    import cv2

    from deepmia.display import LABEL_COLOURS, save_png, to_rgb

    rgb = np.ascontiguousarray(to_rgb(np.swapaxes(image.array, 1, 2)))
    zoom = max(1, int(np.ceil(512 / max(rgb.shape[:2]))))  # draw on a picture of at least 512 px
    if zoom > 1:
        rgb = np.ascontiguousarray(np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1))
    for b, s, lab in zip(boxes, scores, labels, strict=True):
        if s < min_score:
            continue
        colour = tuple(int(v) for v in LABEL_COLOURS[lab % len(LABEL_COLOURS)])
        x0, y0, x1, y1 = (int(round(v * zoom)) for v in b)
        cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
        cv2.putText(rgb, f"{names[lab]} {s:.2f}", (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    save_png(rgb, path)


class Predictor:
    """Detect objects with a trained model directory (fold ensemble, mirror TTA, weighted box fusion).

    Args:
        model_dir: The model directory (``plan.json`` and ``fold_<k>/model_best.pt``).
        folds: Folds to ensemble (default: every trained fold).
        tta: False turns mirror test-time augmentation off; otherwise the plan's ``inference.tta`` (chosen on
            validation when the model was trained) applies.
        precision: Override the plan's precision.

    Raises:
        InvalidArgumentError: Not a detection model directory, or no weights for a requested fold.
    """

    def __init__(
        self, model_dir: str | os.PathLike[str], *, folds: Sequence[int] | None = None, tta: bool | None = None,
        precision: str | None = None,
    ) -> None:
        from deepmia.tasks.detect.train import build_detector

        self.model_dir = Path(model_dir)
        self.plan: DetectPlan = load_plan(self.model_dir / "plan.json")
        found = available_folds(self.model_dir)
        self.folds = list(folds) if folds is not None else found
        missing = sorted(set(self.folds) - set(found))
        if not self.folds or missing:
            raise InvalidArgumentError(f"no trained weights for fold(s) {missing or 'any'} (found {found})",
                                       path=self.model_dir, fix="train them with `deepmia train detect`")
        configure_threads(self.plan.schedule.threads)
        self.tta = self.plan.inference.tta and tta is not False
        self.precision = precision or self.plan.schedule.precision
        self.detectors = []
        for k in self.folds:
            det = build_detector(self.plan)
            state = torch.load(self.model_dir / f"fold_{k}" / "model_best.pt", map_location="cpu", weights_only=True)
            det.load_state_dict({key: v.float() for key, v in state.items()})
            self.detectors.append(det.eval())

    def prepare(self, image: Image, *, path: Any = None) -> np.ndarray:
        """The image in network space.

        Raises:
            InvalidArgumentError: Its channels or dimensionality do not fit the model.
        """
        if image.num_channels != self.plan.in_channels or image.spatial_dims != self.plan.spatial_dims:
            raise InvalidArgumentError(
                f"image of shape {image.array.shape}; the model expects {self.plan.in_channels} channel(s), "
                f"{self.plan.spatial_dims}D", path=path)
        return resize(normalize(image.array, self.plan), self.plan.scale)

    def predict_arrays(self, arrays: Sequence[np.ndarray], shapes: Sequence[Sequence[int]]
                       ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Boxes in image pixels (clipped to each image's ``shapes``), scores and class indices per prepared array."""
        found = detect_arrays(self.detectors, arrays, self.plan, tta=self.tta, precision=self.precision)
        out = []
        for (boxes, scores, labels), shape in zip(found, shapes, strict=True):
            d = len(shape)
            b = boxes / self.plan.scale
            hi = np.asarray(shape, np.float64)
            b = np.concatenate([np.clip(b[:, :d], 0, hi), np.clip(b[:, d:], 0, hi)], axis=1)
            out.append((b, scores, labels))
        return out

    def predict_image(self, image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 2d)`` in the image's pixels, scores and class indices."""
        return self.predict_arrays([self.prepare(image)], [image.spatial_shape])[0]

    def predict_path(self, src: str | Path, dst: str | Path, *, figure: bool = False) -> dict[str, Any]:
        """Detect in an image file or every image file of a folder; write COCO results.

        Writes ``dst/predictions.json``, ``dst/categories.json`` and, with ``figure`` (2D only),
        ``dst/figures/<stem>.png``.

        In a folder, files that are not images or cannot be read or do not fit the model are skipped and listed in
        ``dst/skipped.json``; a single bad file raises.

        Returns:
            ``predicted`` (images), ``detections``, ``skipped`` (file, reason) pairs and ``out`` (the JSON path).

        Raises:
            InvalidArgumentError: The input is missing, nothing could be predicted, or ``figure`` on a 3D model.
            ReadError: A single input file cannot be read.
        """
        from deepmia.io import image_stem, is_image_file, read_image

        src, dst = Path(src), Path(dst)
        if figure and self.plan.spatial_dims != 2:
            raise InvalidArgumentError("--figure draws 2D images; this is a 3D model")
        if not src.exists():
            raise InvalidArgumentError("input not found", path=src)
        single = src.is_file()
        paths = [src] if single else sorted(p for p in src.iterdir() if not p.name.startswith("."))
        dst.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        skipped: list[tuple[str, str]] = []
        n = 0
        for path in paths:
            if not single and not is_image_file(path):
                skipped.append((path.name, "not an image file deepmia reads"))
                continue
            try:
                image = read_image(path)
                boxes, scores, labels = self.predict_image(image)
            except DeepmiaError as exc:
                if single:
                    raise
                skipped.append((path.name, str(exc)))
                continue
            n += 1
            results.extend(to_coco_results(image_stem(path), boxes, scores, labels, affine=image.affine))
            if figure:
                (dst / "figures").mkdir(exist_ok=True)
                _figure(image, boxes, scores, labels, self.plan.class_names,
                        dst / "figures" / f"{image_stem(path)}.png")
        if n == 0:
            raise InvalidArgumentError(f"no image could be predicted ({len(skipped)} skipped)", path=src)
        out = dst / "predictions.json"
        out.write_text(json.dumps(results) + "\n")
        (dst / "categories.json").write_text(json.dumps(categories_of(self.plan.class_names), indent=1) + "\n")
        if skipped:
            (dst / "skipped.json").write_text(json.dumps([{"file": f, "reason": r} for f, r in skipped], indent=1))
        return {"predicted": n, "detections": len(results), "skipped": skipped, "out": out}
