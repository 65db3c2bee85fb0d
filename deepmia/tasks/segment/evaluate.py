"""Segmentation evaluation: per-case, per-class Dice/IoU/HD95/ASSD/NSD with bootstrap intervals.

:func:`evaluate_dirs` scores a folder of predictions against a folder of references (matched by file name);
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

__all__ = ["evaluate_dirs", "validate_fold", "write_rows"]

Progress = Callable[[str, int, int], None]


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InvalidArgumentError("not a folder", path=folder)
    return {p.name: p for p in sorted(folder.iterdir()) if is_image_file(p)}


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows as CSV (columns from the first row)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case_id"])
        writer.writeheader()
        writer.writerows(rows)


def evaluate_dirs(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    *,
    labels: Mapping[int, str] | None = None,
    tolerance_mm: float = 1.0,
    n_resamples: int = 2000,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score every reference in ``gt_dir`` against the prediction of the same file name in ``pred_dir``.

    Args:
        pred_dir: Predicted label maps.
        gt_dir: Reference label maps.
        labels: Foreground labels to score (default: every non-zero value found in the references).
        tolerance_mm: NSD tolerance.
        n_resamples: Bootstrap resamples for the 95% intervals.
        out_dir: If given, writes ``per_case.csv`` and ``summary.json`` there.
        progress: Called as ``progress(done, total)``.

    Raises:
        InvalidArgumentError: A reference has no prediction, or a pair's geometry differs.
    """
    from deepmia.io import read_image

    preds, refs = _files(Path(pred_dir)), _files(Path(gt_dir))
    if not refs:
        raise InvalidArgumentError("no label maps found", path=gt_dir)
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise InvalidArgumentError(f"{len(missing)} reference(s) have no prediction: {missing[:5]}", path=pred_dir)
    loaded = []
    found: set[int] = set()
    for name in refs:
        ref = read_image(refs[name], kind="label")
        pred = read_image(preds[name], kind="label")
        if ref.spatial_shape != pred.spatial_shape or not np.allclose(ref.affine, pred.affine, atol=1e-3):
            raise InvalidArgumentError(
                f"prediction shape {pred.spatial_shape} / affine differs from the reference's {ref.spatial_shape}",
                path=preds[name],
                fix="predict on the reference's grid",
            )
        found.update(int(v) for v in np.unique(ref.array) if v != 0)
        loaded.append((name, pred, ref))
    names = dict(labels) if labels else {k: str(k) for k in sorted(found)}
    acc = SegmentationAccumulator(names, tolerance_mm=tolerance_mm, n_resamples=n_resamples)
    for i, (name, pred, ref) in enumerate(loaded):
        acc.update(pred.array[0], ref.array[0], spacing=ref.spacing, case_id=name)
        if progress:
            progress(i + 1, len(loaded))
    summary = acc.aggregate()
    summary["tolerance_mm"] = tolerance_mm
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_rows(out / "per_case.csv", acc.rows())
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


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
        pred = predictor.predict(image)
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
