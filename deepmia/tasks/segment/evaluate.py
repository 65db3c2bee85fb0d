"""Segmentation evaluation: per-case, per-class Dice/IoU/HD95/ASSD/NSD with bootstrap intervals.

:func:`evaluate_dirs` scores a folder of predictions against a folder of references (matched by file name),
optionally inside region-of-interest masks and with pixel AUCs from probability maps, per case and pooled;
:func:`validate_fold` predicts a fold's validation cases with the trained model, chooses keep-largest-component
per class on them, and writes the fold's metrics.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.io import is_image_file
from deepmia.metrics.segmentation import SegmentationAccumulator, dice_per_label

__all__ = ["PooledCounts", "evaluate_dirs", "validate_fold", "write_rows"]

Progress = Callable[[str, int, int], None]


def _files(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (``case_01.nii.gz`` -> ``case_01``), so a prediction may differ in format.

    Only files directly in ``folder`` whose suffix names an image format count: what ``deepmia predict`` writes
    beside its label maps (``run.json``, ``measurements.csv``, ``skipped.csv``, the ``probabilities/`` and
    ``figures/`` folders) is never a case.
    """
    from deepmia.io import image_stem

    if not folder.is_dir():
        raise InvalidArgumentError("not a folder", path=folder)
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_image_file(p):
            stem = image_stem(p)
            if stem in out:
                raise InvalidArgumentError(f"{out[stem].name} and {p.name} have the same name", path=folder,
                                           fix="keep one file per case in the folder")
            out[stem] = p
    return out


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows as CSV (columns from the first row)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case_id"])
        writer.writeheader()
        writer.writerows(rows)


def _pair_cases(preds: dict[str, Path], refs: dict[str, Path], pred_dir: Path, gt_dir: Path,
                strict: bool) -> tuple[list[str], list[str], list[str]]:
    """Case names in both folders, references without a prediction, predictions without a reference.

    Raises:
        InvalidArgumentError: No reference, no case in both folders, or (``strict``) a reference without a
            prediction.
    """
    if not refs:
        raise InvalidArgumentError("no label maps found", path=gt_dir)
    both = [name for name in refs if name in preds]
    missing = sorted(set(refs) - set(preds))
    extra = sorted(set(preds) - set(refs))
    if strict and missing:
        raise InvalidArgumentError(f"{len(missing)} reference(s) have no prediction: {missing[:5]}", path=pred_dir,
                                   fix="predict them, or leave out --strict to score the cases present in both")
    if not both:
        raise InvalidArgumentError(
            f"no prediction has the name of a reference (references: {sorted(refs)[:3]}, predictions: "
            f"{extra[:3]})", path=pred_dir, fix=f"name each prediction like its reference in {gt_dir}")
    return both, missing, extra


def _partner(files: dict[str, Path], name: str, folder: Path, what: str) -> Path:
    if name not in files:
        raise InvalidArgumentError(f"reference {name!r} has no {what}", path=folder,
                                   fix=f"give every reference a {what} of the same name (any image format)")
    return files[name]


class PooledCounts:
    """Per-case pixel counts and ranked scores of one class, for metrics over all pixels of all cases pooled.

    Pooled (micro-averaged) scores are what retinal-vessel papers report: F1 over the pixels of every test
    image together, and the pixel AUC of all their pixels. Confidence intervals resample cases, and a resample
    is scored exactly without touching pixels again: the confusion counts add up per case, and the AUC is the
    weighted sum of a case-by-case matrix ``A[c, d]`` = pairs (positive pixel of case c, negative pixel of case
    d) ranked correctly (ties count one half), so the AUC of case weights ``w`` is ``w A w / (w.P)(w.N)``.
    """

    def __init__(self) -> None:
        self.counts: list[tuple[int, int, int, int]] = []  # tp, fp, fn, tn
        self.positives: list[np.ndarray] = []
        self.negatives: list[np.ndarray] = []

    def update(self, pred: np.ndarray, ref: np.ndarray, scores: np.ndarray | None) -> float:
        """Add one case's masked boolean prediction/reference (and scores); returns its own AUC (NaN if undefined)."""
        tp = int(np.count_nonzero(pred & ref))
        fp = int(np.count_nonzero(pred & ~ref))
        fn = int(np.count_nonzero(~pred & ref))
        self.counts.append((tp, fp, fn, int(pred.size) - tp - fp - fn))
        if scores is None:
            return float("nan")
        pos, neg = np.sort(scores[ref].astype(np.float32)), np.sort(scores[~ref].astype(np.float32))
        self.positives.append(pos)
        self.negatives.append(neg)
        return _auc_matrix([pos], [neg])[0, 0] / (pos.size * neg.size) if pos.size and neg.size else float("nan")

    def summary(self, *, n_resamples: int, seed: int = 0) -> dict[str, Any]:
        """Pooled Dice (F1), sensitivity, specificity, accuracy and (with scores) AUC, each with a case bootstrap CI."""
        from deepmia.metrics.bootstrap import bootstrap_indices_ci

        c = np.asarray(self.counts, dtype=float)
        n = len(c)
        statistics: dict[str, Callable[[np.ndarray], float]] = {
            "dice": lambda w: 2 * (w @ c[:, 0]) / (2 * (w @ c[:, 0]) + w @ c[:, 1] + w @ c[:, 2]),
            "sensitivity": lambda w: (w @ c[:, 0]) / (w @ (c[:, 0] + c[:, 2])),
            "specificity": lambda w: (w @ c[:, 3]) / (w @ (c[:, 3] + c[:, 1])),
            "accuracy": lambda w: (w @ (c[:, 0] + c[:, 3])) / (w @ c.sum(axis=1)),
        }
        if self.positives:
            pairs = _auc_matrix(self.positives, self.negatives)
            npos = np.array([p.size for p in self.positives], float)
            nneg = np.array([q.size for q in self.negatives], float)
            statistics["auc"] = lambda w: (w @ pairs @ w) / ((w @ npos) * (w @ nneg))
        out: dict[str, Any] = {"n_cases": n}
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, stat in statistics.items():
                point = float(stat(np.ones(n)))
                entry = {"value": point, "ci_low": float("nan"), "ci_high": float("nan")}
                if n >= 2 and n_resamples > 0 and np.isfinite(point):
                    try:
                        ci = bootstrap_indices_ci(
                            lambda idx, f=stat: f(np.bincount(idx, minlength=n).astype(float)),
                            n, n_resamples=n_resamples, seed=seed,
                        )
                        entry["ci_low"], entry["ci_high"] = ci.low, ci.high
                    except InvalidArgumentError:  # undefined on some resample (a class absent): no interval
                        pass
                out[name] = entry
        return out


def _auc_matrix(positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray]) -> np.ndarray:
    """``A[c, d]``: correctly ranked (positive of c, negative of d) pairs, ties one half; inputs sorted."""
    case_of = np.repeat(np.arange(len(positives)), [p.size for p in positives])
    pos = np.concatenate(positives) if positives else np.zeros(0, np.float32)
    out = np.zeros((len(positives), len(negatives)))
    for d, neg in enumerate(negatives):
        below = np.searchsorted(neg, pos, side="left")
        tied = np.searchsorted(neg, pos, side="right") - below
        out[:, d] = np.bincount(case_of, weights=below + 0.5 * tied, minlength=len(positives))
    return out


def evaluate_dirs(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    *,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 1.0,
    n_resamples: int = 2000,
    mask_dir: str | os.PathLike[str] | None = None,
    prob_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Score the references in ``gt_dir`` against the predictions of the same name in ``pred_dir``.

    Files pair up by name without the image suffix (``01.tif`` with ``01.png``); the cases in both folders are
    scored, and the summary lists the references without a prediction (``missing``) and the predictions
    without a reference (``unmatched_predictions``). With ``mask_dir``, each case
    is scored only inside its region-of-interest mask (same name; non-zero = inside): prediction and reference
    are set to background outside it, so Dice and IoU count ROI pixels only, and surface distances see the
    ROI's edge as the image border. With ``prob_dir`` (probability maps of the same name, one channel per class
    as ``deepmia predict --probabilities`` writes, or one foreground channel for a two-class problem), the pixel
    AUC of each class is added: per case, and pooled over all pixels of all cases.

    Args:
        pred_dir: Predicted label maps.
        gt_dir: Reference label maps.
        labels: Foreground labels to score (default: every non-zero value found in the references).
        tolerance_mm: NSD tolerance.
        n_resamples: Bootstrap resamples for the 95% intervals.
        mask_dir: Region-of-interest masks.
        prob_dir: Class probability maps.
        out_dir: If given, writes ``per_case.csv`` and ``summary.json`` there.
        progress: Called as ``progress(done, total)``.
        strict: Refuse when a reference has no prediction (instead of listing it as missing).

    Returns:
        The :class:`SegmentationAccumulator` summary (per-case means with intervals), plus ``missing``,
        ``unmatched_predictions``, ``n_references`` and ``pooled``: per
        class, Dice (F1), sensitivity, specificity, accuracy and (with ``prob_dir``) AUC over the pooled pixels
        with case-bootstrap intervals; with ``prob_dir`` each class's ``auc`` (per-case) summary too.

    Raises:
        InvalidArgumentError: No case in both folders, a scored case has no mask or probability map, a pair's
            geometry differs, or (``strict``) a reference has no prediction.
    """
    from deepmia.io import read_image
    from deepmia.metrics import summarise

    preds, refs = _files(Path(pred_dir)), _files(Path(gt_dir))
    both, missing, extra = _pair_cases(preds, refs, Path(pred_dir), Path(gt_dir), strict)
    masks = _files(Path(mask_dir)) if mask_dir is not None else None
    probs = _files(Path(prob_dir)) if prob_dir is not None else None
    loaded = []
    found: set[int] = set()
    for name in both:
        ref = read_image(refs[name], kind="label")
        pred = read_image(preds[name], kind="label")
        _check_grid(ref, pred, preds[name], "prediction")
        roi = None
        if masks is not None:
            roi_image = read_image(_partner(masks, name, Path(mask_dir or ""), "ROI mask"), kind="label")
            _check_grid(ref, roi_image, masks[name], "ROI mask")
            roi = roi_image.array[0] != 0
        found.update(int(v) for v in np.unique(ref.array if roi is None else ref.array[0][roi]) if v != 0)
        loaded.append((name, pred, ref, roi))
    names = dict(labels) if labels else {k: str(k) for k in sorted(found)}
    acc = SegmentationAccumulator(names, tolerance_mm=tolerance_mm, n_resamples=n_resamples)
    pooled = {k: PooledCounts() for k in names}
    case_auc: dict[int, list[float]] = {k: [] for k in names}
    for i, (name, pred, ref, roi) in enumerate(loaded):
        p, r = pred.array[0], ref.array[0]
        if roi is not None:
            p, r = np.where(roi, p, 0), np.where(roi, r, 0)
        acc.update(p, r, spacing=ref.spacing, case_id=name)
        scores = _class_scores(probs, name, ref, Path(prob_dir or ""), max(names)) if probs is not None else None
        inside = (slice(None),) * r.ndim if roi is None else roi
        for k in names:
            s = None if scores is None else (scores[0] if scores.shape[0] == 1 else scores[k])[inside]
            case_auc[k].append(pooled[k].update(p[inside] == k, r[inside] == k, s))
        if progress:
            progress(i + 1, len(loaded))
    summary = acc.aggregate()
    summary.update(tolerance_mm=tolerance_mm, n_references=len(refs), missing=missing, unmatched_predictions=extra)
    summary["roi"] = None if mask_dir is None else str(mask_dir)
    summary["pooled"] = {names[k]: pooled[k].summary(n_resamples=n_resamples) for k in names}
    rows = acc.rows()
    if probs is not None:
        for k in names:
            summary["per_class"][names[k]]["auc"] = summarise(case_auc[k], n_resamples=n_resamples)
        by_case = {(name, k): case_auc[k][i] for i, (name, *_rest) in enumerate(loaded) for k in names}
        for row in rows:
            row["auc"] = by_case[(row["case_id"], row["label"])]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / "per_case.csv", rows)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _check_grid(ref: Any, other: Any, path: Path, what: str) -> None:
    if ref.spatial_shape != other.spatial_shape or not np.allclose(ref.affine, other.affine, atol=1e-3):
        raise InvalidArgumentError(
            f"{what} shape {other.spatial_shape} / affine differs from the reference's {ref.spatial_shape}",
            path=path,
            fix=f"the {what} must be on the reference's grid",
        )


def _class_scores(probs: dict[str, Path], name: str, ref: Any, folder: Path, top: int) -> np.ndarray:
    """A case's probability map ``(C, *spatial)``: one channel per class, or one foreground channel (2 classes)."""
    from deepmia.io import read_image

    path = _partner(probs, name, folder, "probability map")
    image = read_image(path)
    _check_grid(ref, image, path, "probability map")
    if image.num_channels != 1 and image.num_channels <= top:
        raise InvalidArgumentError(
            f"probability map has {image.num_channels} channels; labels up to {top} need {top + 1} (one per class)",
            path=path,
        )
    if image.num_channels == 1 and top > 1:
        raise InvalidArgumentError(f"one probability channel cannot score {top} foreground classes", path=path)
    return image.array


def _score(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]], labels: Mapping[int, str], n_resamples: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    acc = SegmentationAccumulator(labels, n_resamples=n_resamples)
    for case_id, pred, ref, spacing in cases:
        acc.update(pred, ref, spacing=spacing, case_id=case_id)
    return acc.aggregate(), acc.rows()


def validate_fold(
    dataset: Dataset, model_dir: Path, fold: int, val_ids: Sequence[str], *, progress: Progress | None = None
) -> dict[str, Any]:
    """Predict the fold's validation cases in their own geometry; choose post-processing; write metrics.

    Keep-largest-component is enabled for a class when it raises (or keeps) that class's mean Dice on these
    cases (nnU-Net's rule); the choice is stored in the plan's ``inference.largest_component``.
    """
    from deepmia.tasks.segment.plan import apply_overrides, load_plan
    from deepmia.tasks.segment.predict import Predictor, keep_largest_component

    predictor = Predictor(model_dir, folds=[fold], postprocess=False)
    plan = predictor.plan
    labels = {int(k): v for k, v in plan.labels.items() if int(k) != 0}
    raw = []
    for i, case_id in enumerate(val_ids):
        image = dataset.read_image(case_id)
        ref = dataset.read_label(case_id, image=image)
        pred = predictor.predict(image).labels
        raw.append((case_id, pred.array[0], ref.array[0], image.spacing))
        if progress:
            progress("validate", i + 1, len(val_ids))
    if not raw:
        raise DatasetError(f"fold {fold} has no validation cases", path=dataset.root)

    # Only Dice decides post-processing: no surface distances until the final scoring.
    def class_dice(cases, which: list[int]) -> np.ndarray:
        return np.asarray([list(dice_per_label(p, r, which).values()) for _, p, r, _ in cases], dtype=float)

    base = class_dice(raw, list(labels))
    chosen = []
    for j, k in enumerate(labels):
        trial = class_dice([(c, keep_largest_component(p, [k]), r, s) for c, p, r, s in raw], [k])
        if np.nanmean(trial[:, 0]) >= np.nanmean(base[:, j]):
            chosen.append(k)
    final = [(c, keep_largest_component(p, chosen), r, s) for c, p, r, s in raw] if chosen else raw
    summary, rows = _score(final, labels, 2000)
    per_case = base[np.isfinite(base).any(axis=1)]
    dice_without = float(np.mean(np.nanmean(per_case, axis=1)))
    summary["postprocessing"] = {"largest_component": chosen, "dice_without": dice_without}
    summary["fold"] = fold
    summary["tta"] = True
    plan = apply_overrides(load_plan(model_dir / "plan.json"), {"inference.largest_component": chosen})
    plan.save(model_dir / "plan.json")
    fold_dir = model_dir / f"fold_{fold}"
    write_rows(fold_dir / "val_per_case.csv", rows)
    return summary
