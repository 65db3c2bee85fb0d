"""Segmentation metrics per class: Dice, IoU, HD95, ASSD and normalised surface Dice, spacing-aware, 2D and 3D.

Conventions (the same as MONAI's ``compute_hausdorff_distance``, ``compute_average_surface_distance`` and
``compute_surface_dice`` with ``use_subvoxels=False``, which the tests check):

* The surface of a mask is its boundary voxels: the mask minus its binary erosion with the face-connected
  structuring element; outside the array counts as background, so a mask touching the border has a surface there.
* Surface distances are Euclidean, in millimetres, between voxel centres scaled by ``spacing`` (anisotropic
  spacing is exact, not approximated); each surface voxel is matched to the nearest surface voxel of the other
  mask (k-d tree over surface points; only the bounding box of the two masks is touched).
* HD95 is the larger of the two directed 95th percentiles (linear interpolation between order statistics).
* ASSD is the mean of all surface distances in both directions pooled: ``(sum d(P->G) + sum d(G->P)) / (|P| + |G|)``.
* NSD (normalised surface Dice, Nikolov et al. 2021) counts surface voxels within ``tolerance_mm`` of the other
  surface: ``(#{d(P->G) <= tau} + #{d(G->P) <= tau}) / (|P| + |G|)``. DeepMind's ``surface-distance`` package and
  MONAI's ``use_subvoxels=True`` weight each surface element by its area instead; the two agree as the surface
  gets finer and differ by a few percent on small structures.

Empty masks (each result says which case it is, in ``pred_empty`` / ``gt_empty``):

* both empty: Dice = IoU = NSD = 1, HD95 = ASSD = 0 (a correct "nothing here");
* one empty: Dice = IoU = NSD = 0, HD95 = ASSD = ``inf`` (no surface to measure to).

:class:`SegmentationAccumulator` never averages those silently: overlap metrics leave out classes where both
masks are empty (reported as ``n_both_empty``), distance metrics average only cases where both are present
(``n_one_empty`` and the ``inf`` count are reported), like nnU-Net and MONAI's ``ignore_empty``.
MONAI itself returns NaN (both empty) or inf/NaN with a warning (one empty) for the distances, and computes
them in float32 (differences from ours up to about 1e-5 mm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from deepmia.errors import InvalidArgumentError
from deepmia.metrics._base import Accumulator, default_case_id

__all__ = [
    "ClassScores",
    "SEGMENTATION_METRICS",
    "binary_segmentation_metrics",
    "dice_per_label",
    "segmentation_metrics",
    "surface_distances",
    "SegmentationAccumulator",
]

SEGMENTATION_METRICS = ("dice", "iou", "hd95", "assd", "nsd")
_OVERLAP = ("dice", "iou", "nsd")
_DISTANCE = ("hd95", "assd")


@dataclass(frozen=True)
class ClassScores:
    """Metrics of one class in one case.

    Attributes:
        dice: Dice coefficient, 0..1.
        iou: Intersection over union (Jaccard), 0..1.
        hd95: 95th-percentile symmetric Hausdorff distance in mm (``percentile`` may differ; see the kernel).
        assd: Average symmetric surface distance in mm.
        nsd: Normalised surface Dice at ``tolerance_mm``, 0..1.
        pred_empty: The prediction has no voxel of this class.
        gt_empty: The reference has no voxel of this class.
    """

    dice: float
    iou: float
    hd95: float
    assd: float
    nsd: float
    pred_empty: bool
    gt_empty: bool

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for CSV and JSON."""
        return asdict(self)


def check_spacing(spacing: Sequence[float] | float, ndim: int) -> np.ndarray:
    sp = (
        np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,))
        if np.ndim(spacing) == 0
        else np.asarray(spacing, dtype=float)
    )
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InvalidArgumentError(
            f"spacing={tuple(np.ravel(spacing))!r} must give {ndim} positive voxel sizes in mm, one per axis"
        )
    return sp


def _check_pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(prediction), np.asarray(reference)
    if pred.shape != ref.shape:
        raise InvalidArgumentError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}",
            fix="resample the prediction onto the reference grid (nearest neighbour) first",
        )
    if pred.ndim not in (2, 3):
        raise InvalidArgumentError(
            f"label maps must be 2D (X, Y) or 3D (X, Y, Z), got shape {pred.shape}",
            fix="pass image.array[0] for a one-channel label Image",
        )
    for name, arr in (("prediction", pred), ("reference", ref)):
        if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)):
            raise InvalidArgumentError(
                f"{name} has dtype {arr.dtype}; label maps must be integer or boolean",
                fix="threshold or argmax probabilities into labels first",
            )
    return pred, ref


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(max(hit[0] - margin, 0), min(hit[-1] + margin + 1, mask.shape[axis])))
    return tuple(slices)


def _surface_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Boundary voxel centres of ``mask`` in mm (outside the array is background)."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return np.argwhere(edge) * spacing


def surface_distances(
    prediction: np.ndarray, reference: np.ndarray, *, spacing: Sequence[float] | float
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty binary masks.

    Args:
        prediction: Boolean mask, 2D or 3D.
        reference: Boolean mask of the same shape.
        spacing: Voxel size in mm per axis (a scalar for isotropic voxels).

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: for each surface voxel of one mask, the distance to the nearest
        surface voxel of the other.

    Raises:
        InvalidArgumentError: Shapes differ, a mask is empty, or the spacing is not positive.
    """
    pred, ref = _check_pair(np.asarray(prediction, bool), np.asarray(reference, bool))
    sp = check_spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise InvalidArgumentError("surface distances need two non-empty masks; one of them is empty")
    box = _bounding_box(pred | ref)
    p_pts, r_pts = _surface_points(pred[box], sp), _surface_points(ref[box], sp)
    return cKDTree(r_pts).query(p_pts)[0], cKDTree(p_pts).query(r_pts)[0]


def binary_segmentation_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    spacing: Sequence[float] | float,
    tolerance_mm: float = 1.0,
    percentile: float = 95.0,
) -> ClassScores:
    """Dice, IoU, HD95, ASSD and NSD of one binary mask pair (the per-class kernel).

    Args:
        prediction: Boolean (or 0/1 integer) mask, 2D or 3D.
        reference: Reference mask of the same shape.
        spacing: Voxel size in mm per axis; required, because distances depend on it.
        tolerance_mm: NSD tolerance in mm.
        percentile: Percentile of the Hausdorff distance reported as ``hd95`` (100 gives the maximum).

    Returns:
        The class scores; empty masks follow the module's conventions.

    Raises:
        InvalidArgumentError: Shapes differ, non-integer input, bad spacing, tolerance or percentile.
    """
    pred, ref = _check_pair(prediction, reference)
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    sp = check_spacing(spacing, pred.ndim)
    if not (tolerance_mm >= 0):
        raise InvalidArgumentError(f"tolerance_mm={tolerance_mm!r} must be >= 0 (mm)")
    if not (0 <= percentile <= 100):
        raise InvalidArgumentError(f"percentile={percentile!r} must be within [0, 100]")
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 or n_ref == 0:
        both = n_pred == n_ref
        overlap, distance = (1.0, 0.0) if both else (0.0, float("inf"))
        return ClassScores(overlap, overlap, distance, distance, overlap, n_pred == 0, n_ref == 0)
    inter = int(np.count_nonzero(pred & ref))
    d_pr, d_rp = surface_distances(pred, ref, spacing=sp)
    hd = max(float(np.percentile(d_pr, percentile)), float(np.percentile(d_rp, percentile)))
    n_surface = d_pr.size + d_rp.size
    assd = float((d_pr.sum() + d_rp.sum()) / n_surface)
    nsd = float((np.count_nonzero(d_pr <= tolerance_mm) + np.count_nonzero(d_rp <= tolerance_mm)) / n_surface)
    return ClassScores(
        dice=2.0 * inter / (n_pred + n_ref),
        iou=inter / (n_pred + n_ref - inter),
        hd95=hd,
        assd=assd,
        nsd=nsd,
        pred_empty=False,
        gt_empty=False,
    )


def dice_per_label(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int], *, both_empty: float = float("nan")
) -> dict[int, float]:
    """Dice of each label of two label maps: overlap only, no surface distances (cheap enough for every epoch).

    Args:
        prediction: Predicted label map.
        reference: Reference label map of the same shape.
        labels: Label values to score.
        both_empty: Value where neither map has the label (NaN: undefined, left out by ``np.nanmean``; pass 1.0
            for the module's "correct nothing here" convention).

    Raises:
        InvalidArgumentError: Shapes differ or non-integer input.
    """
    pred, ref = _check_pair(prediction, reference)
    out = {}
    for k in labels:
        p, r = pred == k, ref == k
        total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
        out[int(k)] = 2.0 * int(np.count_nonzero(p & r)) / total if total else both_empty
    return out


def _label_names(labels: Sequence[int] | Mapping[int, str] | None, pred: np.ndarray, ref: np.ndarray) -> dict[int, str]:
    if labels is None:
        found = np.union1d(np.unique(pred), np.unique(ref))
        return {int(v): str(int(v)) for v in found if v != 0}
    if isinstance(labels, Mapping):
        return {int(k): str(v) for k, v in labels.items()}
    return {int(v): str(int(v)) for v in labels}


def segmentation_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    spacing: Sequence[float] | float,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    tolerance_mm: float | Mapping[int, float] = 1.0,
    percentile: float = 95.0,
) -> dict[int, ClassScores]:
    """Per-class metrics of a predicted label map against a reference label map (one case).

    Args:
        prediction: Integer label map ``(X, Y)`` or ``(X, Y, Z)``; a boolean mask counts as label 1.
        reference: Reference label map of the same shape.
        spacing: Voxel size in mm per axis (e.g. ``image.spacing``); required, distances depend on it.
        labels: Labels to score (a sequence, or a ``{label: name}`` mapping). ``None`` scores every non-zero label
            in either map; pass the dataset's labels so a class missing from both maps is still reported.
        tolerance_mm: NSD tolerance in mm, one value or one per label.
        percentile: Hausdorff percentile reported as ``hd95``.

    Returns:
        ``{label: ClassScores}``.

    Example:
        >>> ref = np.zeros((20, 20), np.uint8); ref[5:15, 5:15] = 1
        >>> scores = segmentation_metrics(ref, ref, spacing=(1.0, 1.0), labels=[1])
        >>> scores[1].dice, scores[1].hd95
        (1.0, 0.0)
    """
    pred, ref = _check_pair(prediction, reference)
    check_spacing(spacing, pred.ndim)
    names = _label_names(labels, pred, ref)
    pred, ref = pred.view(np.uint8) if pred.dtype == bool else pred, ref.view(np.uint8) if ref.dtype == bool else ref
    boxes = _label_boxes(pred, ref, names)
    out = {}
    for label in names:
        tol = tolerance_mm[label] if isinstance(tolerance_mm, Mapping) else tolerance_mm
        box = boxes.get(label, tuple(slice(0, 0) for _ in pred.shape))
        out[label] = binary_segmentation_metrics(
            pred[box] == label,
            ref[box] == label,
            spacing=spacing,
            tolerance_mm=tol,
            percentile=percentile,
        )
    return out


def _label_boxes(pred: np.ndarray, ref: np.ndarray, labels: Mapping[int, str]) -> dict[int, tuple[slice, ...]]:
    """Bounding box (one voxel margin, clipped to the array) of each label in either map, from one pass per map.

    Cropping to it changes no metric: overlaps are counted inside it, and the margin keeps the erosion, hence
    the surfaces, identical (outside the array is background either way).
    """
    wanted = [k for k in labels if k > 0]
    if not wanted:
        return {k: tuple(slice(None) for _ in pred.shape) for k in labels}
    top = max(wanted)
    per_map = [ndimage.find_objects(np.where(m > top, 0, m).clip(0), max_label=top) for m in (pred, ref)]
    out: dict[int, tuple[slice, ...]] = {k: tuple(slice(None) for _ in pred.shape) for k in labels if k <= 0}
    for k in wanted:
        found = [objs[k - 1] for objs in per_map if objs[k - 1] is not None]
        if found:
            out[k] = tuple(
                slice(max(min(b[a].start for b in found) - 1, 0), min(max(b[a].stop for b in found) + 1, n))
                for a, n in enumerate(pred.shape)
            )
    return out


class SegmentationAccumulator(Accumulator):
    """Per-case, per-class segmentation metrics over a dataset, summarised with bootstrap intervals over cases.

    Args:
        labels: The dataset's foreground labels, or ``{label: name}``.
        tolerance_mm: NSD tolerance in mm (one value or one per label).
        percentile: Hausdorff percentile.
        n_resamples: Bootstrap resamples (0: no intervals).
        level: Interval coverage.
        method: ``"percentile"`` or ``"bca"``.
        seed: Bootstrap seed.

    Example:
        >>> acc = SegmentationAccumulator({1: "anterior", 2: "posterior"}, n_resamples=200)
        >>> row = acc.update(pred, gt, spacing=img.spacing, case_id="hippocampus_001")  # doctest: +SKIP
        >>> acc.aggregate()["per_class"]["anterior"]["dice"]["mean"]  # doctest: +SKIP
    """

    def __init__(
        self,
        labels: Sequence[int] | Mapping[int, str],
        *,
        tolerance_mm: float | Mapping[int, float] = 1.0,
        percentile: float = 95.0,
        n_resamples: int = 2000,
        level: float = 0.95,
        method: str = "percentile",
        seed: int = 0,
    ) -> None:
        self.labels = _label_names(labels, np.zeros(1, np.uint8), np.zeros(1, np.uint8))
        if not self.labels:
            raise InvalidArgumentError("SegmentationAccumulator needs at least one label")
        self.tolerance_mm = tolerance_mm
        self.percentile = percentile
        super().__init__(n_resamples=n_resamples, level=level, method=method, seed=seed)

    def reset(self) -> None:
        """Forget every case."""
        self._rows: list[dict[str, Any]] = []
        self._cases: list[str] = []

    def update(
        self,
        prediction: np.ndarray,
        reference: np.ndarray,
        *,
        spacing: Sequence[float] | float,
        case_id: str | None = None,
    ) -> dict[int, ClassScores]:
        """Score one case and remember its per-class rows.

        Returns:
            The case's ``{label: ClassScores}``.
        """
        scores = segmentation_metrics(
            prediction,
            reference,
            spacing=spacing,
            labels=list(self.labels),
            tolerance_mm=self.tolerance_mm,
            percentile=self.percentile,
        )
        case = default_case_id(case_id, len(self._cases))
        self._cases.append(case)
        for label, s in scores.items():
            self._rows.append({"case_id": case, "label": label, "class": self.labels[label], **s.as_dict()})
        return scores

    def rows(self) -> list[dict[str, Any]]:
        """One row per case and class (``case_id, label, class, dice, iou, hd95, assd, nsd, pred_empty, gt_empty``)."""
        return [dict(r) for r in self._rows]

    def _matrix(self, metric: str) -> np.ndarray:
        """``(n_cases, n_labels)`` values of one metric with the aggregation policy applied (excluded = NaN)."""
        k = len(self.labels)
        out = np.full((len(self._cases), k), np.nan)
        for i, r in enumerate(self._rows):
            both = r["pred_empty"] and r["gt_empty"]
            one = r["pred_empty"] != r["gt_empty"]
            excluded = both or (one and metric in _DISTANCE)
            if not excluded:
                out[i // k, i % k] = r[metric]
        return out

    def aggregate(self) -> dict[str, Any]:
        """Summary per class and of the per-case mean over classes.

        Returns:
            ``{"n_cases", "per_class": {name: {metric: summary, "n_both_empty", "n_one_empty"}},
            "mean": {metric: summary}}`` where a summary is :func:`deepmia.metrics._base.summarise`'s dict; the
            ``mean`` entry first averages the classes within each case (over the classes the policy keeps), then
            summarises those per-case means with a bootstrap interval over cases.
        """
        per_class: dict[str, Any] = {}
        k = len(self.labels)
        empty_flags = np.array([(r["pred_empty"], r["gt_empty"]) for r in self._rows], bool).reshape(-1, k, 2)
        matrices = {m: self._matrix(m) for m in SEGMENTATION_METRICS}
        for j, (label, name) in enumerate(self.labels.items()):
            entry: dict[str, Any] = {"label": label}
            for m in SEGMENTATION_METRICS:
                entry[m] = self.summarise(matrices[m][:, j])
            flags = empty_flags[:, j] if empty_flags.size else np.zeros((0, 2), bool)
            entry["n_both_empty"] = int(np.sum(flags[:, 0] & flags[:, 1]))
            entry["n_one_empty"] = int(np.sum(flags[:, 0] != flags[:, 1]))
            per_class[name] = entry
        mean = {}
        for m in SEGMENTATION_METRICS:
            mat = matrices[m]
            kept = np.isfinite(mat).any(axis=1)
            case_means = np.full(mat.shape[0], np.nan)
            case_means[kept] = np.nanmean(mat[kept], axis=1)
            mean[m] = self.summarise(case_means)
        return {"n_cases": len(self._cases), "per_class": per_class, "mean": mean}
