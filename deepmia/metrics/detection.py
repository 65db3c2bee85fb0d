"""Detection metrics for 2D and 3D boxes: COCO mAP and average recall, FROC and the LUNA16 CPM.

Boxes are corner arrays: ``[x0, y0, x1, y1]`` in 2D and ``[x0, y0, z0, x1, y1, z1]`` in 3D (pixels, voxels or
mm, as long as predictions and ground truth agree); IoU is area-based in 2D and volume-based in 3D, with no
"+1" (as pycocotools). A zero-size box is allowed and overlaps nothing; an inverted box is refused.

COCO evaluation follows pycocotools' ``COCOeval`` for boxes with the area range ``all`` and no crowd regions,
which a test checks to 1e-6: per image and class the detections are sorted by score (stable) and cut to
``max_dets``; at each IoU threshold in 0.50:0.05:0.95 each detection, in score order, takes the unmatched
ground-truth box of highest IoU at or above the threshold (ties go to the later box, as in pycocotools);
precision is made monotone and read at 101 recall points; AP averages them; classes without ground truth are
left out of the means.

FROC follows the LUNA16 evaluation: a detection hits a ground-truth box when their IoU reaches
``iou_threshold`` (or, with ``hit="center"``, when the detection's centre lies inside the box); each
ground-truth box counts once, with the highest score among the detections hitting it; other detections hitting
it are neither true nor false positives; detections hitting nothing are false positives. Sensitivity is read at
1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image by linear interpolation of the FROC curve (which starts
at the origin and stays flat after its last point), and the CPM is their mean. Intervals resample images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepmia._validate import look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.metrics._base import Accumulator, default_case_id
from deepmia.metrics.bootstrap import bootstrap_indices_ci

__all__ = ["box_iou", "box_intersection", "coco_evaluate", "froc", "FROC_FP_RATES", "DetectionAccumulator"]

FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _boxes(boxes: Any, what: str, dims: int | None = None) -> np.ndarray:
    b = np.asarray(boxes, dtype=float)
    if b.size == 0:
        return np.zeros((0, 2 * (dims or 2)))
    if b.ndim != 2 or b.shape[1] not in (4, 6) or (dims is not None and b.shape[1] != 2 * dims):
        want = "(N, 4) [x0, y0, x1, y1] or (N, 6) [x0, y0, z0, x1, y1, z1]" if dims is None else f"(N, {2 * dims})"
        raise InvalidArgumentError(f"{what} must be {want} corner boxes, got shape {b.shape}")
    d = b.shape[1] // 2
    if not np.isfinite(b).all():
        raise InvalidArgumentError(f"{what} holds non-finite coordinates")
    bad = np.flatnonzero((b[:, d:] < b[:, :d]).any(axis=1))
    if bad.size:
        raise InvalidArgumentError(
            f"{what} box {int(bad[0])} {b[bad[0]].tolist()} has a max corner below its min corner",
            fix="boxes are [min corner, max corner]; convert [x, y, w, h] with x1 = x + w",
        )
    return b


def box_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """Pairwise IoU of two sets of 2D or 3D corner boxes.

    Returns:
        ``(len(a), len(b))`` IoU matrix (0 where the union is empty).
    """
    a, b = _boxes(boxes_a, "boxes_a"), _boxes(boxes_b, "boxes_b")
    if a.shape[0] and b.shape[0] and a.shape[1] != b.shape[1]:
        raise InvalidArgumentError(f"cannot compare {a.shape[1] // 2}D boxes with {b.shape[1] // 2}D boxes")
    d = max(a.shape[1], b.shape[1]) // 2
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    inter = box_intersection(a, b)
    vol_a, vol_b = np.prod(a[:, d:] - a[:, :d], axis=1), np.prod(b[:, d:] - b[:, :d], axis=1)
    union = vol_a[:, None] + vol_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_intersection(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas (volumes in 3D) of two non-empty sets of corner boxes of one dimensionality."""
    d = boxes_a.shape[1] // 2
    lo = np.maximum(boxes_a[:, None, :d], boxes_b[None, :, :d])
    hi = np.minimum(boxes_a[:, None, d:], boxes_b[None, :, d:])
    return np.prod(np.clip(hi - lo, 0, None), axis=2)


@dataclass
class _ImageClass:
    """One image's detections of one class after COCO matching: scores (sorted), matched flags per IoU threshold."""

    scores: np.ndarray  # (nd,)
    matched: np.ndarray  # (T, nd) bool
    n_gt: int


def _coco_match(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, *, max_dets: int) -> _ImageClass:
    order = np.argsort(-scores, kind="mergesort")[:max_dets]
    pred, scores = pred[order], scores[order]
    ious = box_iou(pred, gt)
    matched = np.zeros((COCO_IOU_THRESHOLDS.size, pred.shape[0]), bool)
    for t, thr in enumerate(COCO_IOU_THRESHOLDS):
        taken = np.zeros(gt.shape[0], bool)
        for d in range(pred.shape[0]):
            best, m = min(thr, 1 - 1e-10), -1
            for g in range(gt.shape[0]):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m] = True
                matched[t, d] = True
    return _ImageClass(scores, matched, gt.shape[0])


def _coco_accumulate(entries: Sequence[_ImageClass]) -> tuple[np.ndarray, np.ndarray] | None:
    """Precision at the 101 recall points ``(T, R)`` and final recall ``(T,)`` of one class, or None without GT."""
    n_gt = sum(e.n_gt for e in entries)
    if n_gt == 0:
        return None
    scores = np.concatenate([e.scores for e in entries]) if entries else np.zeros(0)
    matched = np.concatenate([e.matched for e in entries], axis=1) if entries else np.zeros((10, 0), bool)
    order = np.argsort(-scores, kind="mergesort")
    matched = matched[:, order]
    tp = np.cumsum(matched, axis=1, dtype=float)
    fp = np.cumsum(~matched, axis=1, dtype=float)
    precision = np.zeros((COCO_IOU_THRESHOLDS.size, COCO_RECALL_POINTS.size))
    recall = np.zeros(COCO_IOU_THRESHOLDS.size)
    if scores.size == 0:
        return precision, recall
    rc = tp / n_gt
    pr = tp / (tp + fp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone envelope, right to left
    for t in range(COCO_IOU_THRESHOLDS.size):
        idx = np.searchsorted(rc[t], COCO_RECALL_POINTS, side="left")
        ok = idx < rc.shape[1]
        precision[t, ok] = pr[t, idx[ok]]
        recall[t] = rc[t, -1]
    return precision, recall


def _coco_summary(per_class: Mapping[str, tuple[np.ndarray, np.ndarray] | None]) -> dict[str, Any]:
    valid = {k: v for k, v in per_class.items() if v is not None}
    if not valid:
        return {
            "map": float("nan"),
            "map50": float("nan"),
            "map75": float("nan"),
            "ar100": float("nan"),
            "per_class": {},
        }
    prec = np.stack([p for p, _ in valid.values()])  # (K, T, R)
    rec = np.stack([r for _, r in valid.values()])  # (K, T)
    return {
        "map": float(prec.mean()),
        "map50": float(prec[:, 0].mean()),
        "map75": float(prec[:, 5].mean()),
        "ar100": float(rec.mean()),
        "per_class": {
            name: {
                "ap": float(p.mean()),
                "ap50": float(p[0].mean()),
                "ap75": float(p[5].mean()),
                "ar100": float(r.mean()),
            }
            for name, (p, r) in valid.items()
        },
    }


@dataclass
class _FrocImage:
    tp_scores: np.ndarray  # best score of the detections hitting each detected GT box
    fp_scores: np.ndarray
    n_gt: int


def _froc_match(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, *, hit: str, iou_threshold: float) -> _FrocImage:
    if gt.shape[0] == 0:
        return _FrocImage(np.zeros(0), scores.copy(), 0)
    if hit == "iou":
        hits = box_iou(pred, gt) >= iou_threshold
    else:
        d = gt.shape[1] // 2
        centre = (pred[:, :d] + pred[:, d:]) / 2
        hits = np.all((centre[:, None] >= gt[None, :, :d]) & (centre[:, None] <= gt[None, :, d:]), axis=2)
    masked = np.where(hits, scores[:, None], -np.inf)
    best = masked.max(axis=0) if pred.shape[0] else np.full(gt.shape[0], -np.inf)
    return _FrocImage(best[np.isfinite(best)], scores[~hits.any(axis=1)], gt.shape[0])


def _froc_curve(images: Sequence[_FrocImage]) -> tuple[np.ndarray, np.ndarray]:
    n_gt = sum(i.n_gt for i in images)
    if n_gt == 0:
        raise InvalidArgumentError("FROC needs at least one ground-truth box")
    tp = np.concatenate([i.tp_scores for i in images])
    fp = np.concatenate([i.fp_scores for i in images])
    thresholds = np.unique(np.concatenate([tp, fp]))[::-1]
    sens = np.searchsorted(np.sort(-tp), -thresholds, side="right") / n_gt
    fpi = np.searchsorted(np.sort(-fp), -thresholds, side="right") / len(images)
    fpi, sens = np.concatenate([[0.0], fpi]), np.concatenate([[0.0], sens])
    last = np.r_[fpi[1:] != fpi[:-1], True]  # keep the highest sensitivity at each FP rate
    return fpi[last], sens[last]


def _froc_values(images: Sequence[_FrocImage], rates: Sequence[float]) -> np.ndarray:
    fpi, sens = _froc_curve(images)
    return np.interp(np.asarray(rates, float), fpi, sens)


def froc(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    *,
    hit: str = "iou",
    iou_threshold: float = 0.1,
    fp_rates: Sequence[float] = FROC_FP_RATES,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """FROC sensitivities and the CPM over images, with bootstrap intervals over images.

    Args:
        predictions: Per image ``{"boxes": (N, 2d), "scores": (N,), "labels": (N,)}``; labels may be left out
            for single-class data.
        ground_truths: Per image ``{"boxes": (M, 2d), "labels": (M,)}``, same images in the same order; an
            image without boxes is a negative image (its detections are all false positives).
        hit: ``"iou"`` or ``"center"``; a hit also needs the same label.
        iou_threshold: IoU needed for a hit with ``hit="iou"`` (0.1 is common for 3D nodules).
        fp_rates: False positives per image at which sensitivity is read.
        n_resamples: Bootstrap resamples over images (0: no intervals).
        level: Interval coverage.
        seed: Bootstrap seed.

    Returns:
        ``{"fp_rates", "sensitivity", "cpm", "cpm_ci", "curve": {"fp_per_image", "sensitivity"},
        "n_images", "n_gt"}``.
    """
    hit = look_up_option(hit, ("iou", "center"), what="FROC hit criterion")
    images = [
        _froc_image(p, g, hit=hit, iou_threshold=iou_threshold, index=i)
        for i, (p, g) in enumerate(zip(predictions, ground_truths, strict=True))
    ]
    return _froc_report(images, fp_rates, n_resamples=n_resamples, level=level, seed=seed)


def _froc_report(
    images: Sequence[_FrocImage], fp_rates: Sequence[float], *, n_resamples: int, level: float, seed: int
) -> dict[str, Any]:
    values = _froc_values(images, fp_rates)
    fpi, sens = _froc_curve(images)
    out: dict[str, Any] = {
        "fp_rates": list(map(float, fp_rates)),
        "sensitivity": values.tolist(),
        "cpm": float(values.mean()),
        "curve": {"fp_per_image": fpi.tolist(), "sensitivity": sens.tolist()},
        "n_images": len(images),
        "n_gt": int(sum(i.n_gt for i in images)),
    }
    if n_resamples and len(images) >= 2:

        def cpm(indices: np.ndarray) -> float:
            picked = [images[i] for i in indices]
            return float(_froc_values(picked, fp_rates).mean()) if sum(i.n_gt for i in picked) else float("nan")

        out["cpm_ci"] = _nan_tolerant_ci(cpm, len(images), n_resamples=n_resamples, level=level, seed=seed)
    return out


def _nan_tolerant_ci(statistic, n: int, *, n_resamples: int, level: float, seed: int) -> dict[str, Any]:
    try:
        return bootstrap_indices_ci(statistic, n, n_resamples=n_resamples, level=level, seed=seed).as_dict()
    except InvalidArgumentError as err:  # e.g. resamples without any ground truth: report why there is no interval
        return {"error": str(err)}


def _split(entry: Mapping[str, Any], what: str, *, with_scores: bool, dims: int | None) -> tuple[np.ndarray, ...]:
    boxes = _boxes(entry.get("boxes", ()), f"{what} boxes", dims)
    n = boxes.shape[0]
    labels = np.asarray(entry.get("labels", np.zeros(n, int)))
    if labels.shape != (n,):
        raise InvalidArgumentError(f"{what}: {n} boxes but labels of shape {labels.shape}")
    if not with_scores:
        return boxes, labels.astype(np.int64)
    scores = np.asarray(entry.get("scores", ()), dtype=float)
    if scores.shape != (n,) or not np.isfinite(scores).all():
        raise InvalidArgumentError(f"{what}: {n} boxes need {n} finite scores, got shape {scores.shape}")
    return boxes, scores, labels.astype(np.int64)


def _froc_image(pred: Mapping[str, Any], gt: Mapping[str, Any], *, hit: str, iou_threshold: float, index: int):
    pb, ps, pl = _split(pred, f"prediction {index}", with_scores=True, dims=None)
    gb, gl = _split(gt, f"ground truth {index}", with_scores=False, dims=None)
    parts = []
    for c in np.union1d(pl, gl):
        parts.append(_froc_match(pb[pl == c], ps[pl == c], gb[gl == c], hit=hit, iou_threshold=iou_threshold))
    if not parts:
        return _FrocImage(np.zeros(0), np.zeros(0), 0)
    return _FrocImage(
        np.concatenate([p.tp_scores for p in parts]),
        np.concatenate([p.fp_scores for p in parts]),
        sum(p.n_gt for p in parts),
    )


def coco_evaluate(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any]],
    *,
    class_names: Mapping[int, str] | None = None,
    max_dets: int = 100,
) -> dict[str, Any]:
    """COCO box metrics (pycocotools-equivalent, area range ``all``): mAP@[.5:.95], mAP@.5, mAP@.75, AR@max_dets.

    Args:
        predictions: Per image ``{"boxes", "scores", "labels"}`` (see :func:`froc`).
        ground_truths: Per image ``{"boxes", "labels"}``, same images in the same order.
        class_names: ``{label: name}`` of the classes to evaluate (default: every label seen).
        max_dets: Detections kept per image and class, highest scores first.

    Returns:
        ``{"map", "map50", "map75", "ar100", "per_class": {name: {"ap", "ap50", "ap75", "ar100"}}}``.
    """
    acc = DetectionAccumulator(class_names, max_dets=max_dets, n_resamples=0)
    for p, g in zip(predictions, ground_truths, strict=True):
        acc.update(p, g)
    return acc.coco()


class DetectionAccumulator(Accumulator):
    """Matches each image's detections as it arrives; reports COCO metrics and FROC with bootstrap intervals.

    Args:
        class_names: ``{label: name}``; default: every label seen, named by its number.
        max_dets: COCO detections per image and class.
        hit: FROC hit criterion, ``"iou"`` or ``"center"``.
        iou_threshold: FROC IoU for a hit.
        fp_rates: FROC false-positive rates per image.
        n_resamples: Bootstrap resamples over images for the CPM and mAP intervals (0: none).
        level: Interval coverage.
        seed: Bootstrap seed.
    """

    def __init__(
        self,
        class_names: Mapping[int, str] | None = None,
        *,
        max_dets: int = 100,
        hit: str = "iou",
        iou_threshold: float = 0.1,
        fp_rates: Sequence[float] = FROC_FP_RATES,
        n_resamples: int = 1000,
        level: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.class_names = None if class_names is None else {int(k): str(v) for k, v in class_names.items()}
        self.max_dets = int(max_dets)
        self.hit = look_up_option(hit, ("iou", "center"), what="FROC hit criterion")
        self.iou_threshold = float(iou_threshold)
        self.fp_rates = tuple(fp_rates)
        super().__init__(n_resamples=n_resamples, level=level, seed=seed)

    def reset(self) -> None:
        """Forget every image."""
        self._coco: list[dict[int, _ImageClass]] = []
        self._froc: list[_FrocImage] = []
        self._ids: list[str] = []
        self._labels: set[int] = set()
        self._dims: int | None = None

    def update(self, prediction: Mapping[str, Any], ground_truth: Mapping[str, Any], *, image_id: str | None = None):
        """Add one image: ``prediction`` ``{"boxes", "scores", "labels"}``, ``ground_truth`` ``{"boxes", "labels"}``."""
        index = len(self._ids)
        name = default_case_id(image_id, index)
        pb, ps, pl = _split(prediction, f"prediction for {name}", with_scores=True, dims=self._dims)
        gb, gl = _split(ground_truth, f"ground truth for {name}", with_scores=False, dims=self._dims)
        for b in (pb, gb):
            if b.shape[0]:
                self._dims = b.shape[1] // 2
        if self.class_names is not None:
            unknown = sorted(set(np.union1d(pl, gl).tolist()) - set(self.class_names))
            if unknown:
                raise InvalidArgumentError(
                    f"{name}: unknown class label(s) {unknown}; known: {sorted(self.class_names)}"
                )
        per_class = {}
        for c in np.union1d(pl, gl).tolist():
            per_class[c] = _coco_match(pb[pl == c], ps[pl == c], gb[gl == c], max_dets=self.max_dets)
        self._labels.update(per_class)
        self._coco.append(per_class)
        self._froc.append(
            _froc_image(
                {"boxes": pb, "scores": ps, "labels": pl},
                {"boxes": gb, "labels": gl},
                hit=self.hit,
                iou_threshold=self.iou_threshold,
                index=index,
            )
        )
        self._ids.append(name)

    def _names(self) -> dict[int, str]:
        return self.class_names if self.class_names is not None else {c: str(c) for c in sorted(self._labels)}

    def _coco_on(self, indices: Sequence[int]) -> dict[str, Any]:
        per_class = {}
        for label, name in self._names().items():
            entries = [self._coco[i][label] for i in indices if label in self._coco[i]]
            per_class[name] = _coco_accumulate(entries)
        return _coco_summary(per_class)

    def coco(self) -> dict[str, Any]:
        """COCO metrics over the images seen so far (no intervals)."""
        return self._coco_on(range(len(self._ids)))

    def aggregate(self) -> dict[str, Any]:
        """COCO metrics (with bootstrap intervals of mAP and mAP@.5) and FROC/CPM (with its interval).

        Returns:
            ``{"n_images", "coco": {..., "map_ci", "map50_ci"}, "froc": {...}}``; ``froc`` is ``None`` when no
            image has a ground-truth box.
        """
        if not self._ids:
            raise InvalidArgumentError("no images to aggregate; call update() first")
        coco = self.coco()
        n = len(self._ids)
        if self.n_resamples and n >= 2:
            for key in ("map", "map50"):
                coco[f"{key}_ci"] = _nan_tolerant_ci(
                    lambda idx, key=key: self._coco_on(idx)[key],
                    n,
                    n_resamples=self.n_resamples,
                    level=self.level,
                    seed=self.seed,
                )
        has_gt = any(i.n_gt for i in self._froc)
        froc_out = (
            _froc_report(self._froc, self.fp_rates, n_resamples=self.n_resamples, level=self.level, seed=self.seed)
            if has_gt
            else None
        )
        return {"n_images": n, "coco": coco, "froc": froc_out}
