"""Preprocessing shared by training and prediction: checks, resampling to the plan's spacing, normalisation.

Training caches each case as ``<id>_image.npy`` (float32, ``(C, *spatial)``), ``<id>_label.npy`` (uint8) and
``<id>.json`` (original geometry and sampled foreground locations per class) in a cache folder keyed by the
plan's preprocessing hash. Cases already cached are skipped, so an interrupted run resumes; workers run in
parallel processes.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError
from deepmia.image import Image
from deepmia.tasks.segment.plan import SegmentPlan, plan_hash

__all__ = ["check_pair", "to_network_grid", "apply_normalization", "preprocess_dataset", "load_case", "cache_dir_for"]

LOCATIONS_PER_CLASS = 10_000


def check_pair(
    image: Image,
    label: Image | None,
    *,
    case_id: str,
    labels: dict[str, str],
    path: Any = None,
    allow_empty: bool = False,
) -> None:
    """Refuse a case that cannot be trained on: NaNs, a label grid unlike the image's, unknown or no labels.

    Raises:
        DatasetError: Naming the case and the problem.
    """
    if np.issubdtype(image.array.dtype, np.floating) and not np.isfinite(image.array).all():
        n = int((~np.isfinite(image.array)).sum())
        raise DatasetError(
            f"case {case_id!r}: image has {n} NaN/inf voxels", path=path, fix="replace or mask them before training"
        )
    if label is None:
        return
    if label.spatial_shape != image.spatial_shape or not np.allclose(label.affine, image.affine, atol=1e-3):
        raise DatasetError(
            f"case {case_id!r}: label map geometry (shape {label.spatial_shape}, spacing {label.spacing}) differs "
            f"from its image's (shape {image.spatial_shape}, spacing {image.spacing})",
            path=path,
            fix="the label map must be on the image's voxel grid",
        )
    values = np.unique(label.array)
    known = {int(k) for k in labels}
    unknown = sorted(int(v) for v in values if int(v) not in known)
    if unknown:
        raise DatasetError(
            f"case {case_id!r}: label values {unknown} are not in the dataset's labels {sorted(known)}", path=path
        )
    if not allow_empty and not np.any(values != 0):
        raise DatasetError(
            f"case {case_id!r}: the label map is empty (background only)",
            path=path,
            fix="remove the case, or set allow_empty_labels in the plan if empty cases are real negatives",
        )


def _needs_resampling(image: Image, spacing: Sequence[float]) -> bool:
    return not np.allclose(image.spacing, spacing, rtol=1e-3, atol=1e-4)


def to_network_grid(image: Image, plan: SegmentPlan) -> Image:
    """Resample an image (or label map, by nearest neighbour) to the plan's target spacing if it differs."""
    if not _needs_resampling(image, plan.target_spacing):
        return image
    from deepmia.processing.spatial import resample

    return resample(image, spacing=tuple(plan.target_spacing))


def apply_normalization(array: np.ndarray, plan: SegmentPlan) -> np.ndarray:
    """Normalise each channel by the plan's scheme; returns float32 ``(C, *spatial)``."""
    out = np.empty(array.shape, dtype=np.float32)
    for c, norm in enumerate(plan.normalization):
        x = array[c].astype(np.float32, copy=False)
        if norm.scheme == "ct":
            lo, hi = norm.clip or (float(x.min()), float(x.max()))
            np.clip(x, lo, hi, out=out[c])
            out[c] -= norm.mean or 0.0
            out[c] /= norm.std or 1.0
            continue
        if norm.scheme == "none":
            out[c] = x
            continue
        if norm.scheme == "rgb":
            x = x / 255.0
        mask = x != 0 if norm.scheme == "zscore_nonzero" else None
        values = x[mask] if mask is not None and mask.any() else x
        mean, std = float(values.mean()), float(values.std())
        out[c] = (x - mean) / max(std, 1e-8)
        if mask is not None:
            out[c][~mask] = 0.0
    return out


def _locations(label: np.ndarray, num_classes: int, rng: np.random.Generator) -> dict[str, list[list[int]]]:
    found = {}
    for k in range(1, num_classes):
        idx = np.argwhere(label == k)
        if len(idx) > LOCATIONS_PER_CLASS:
            idx = idx[rng.choice(len(idx), LOCATIONS_PER_CLASS, replace=False)]
        found[str(k)] = idx.tolist()
    return found


def cache_dir_for(root: str | os.PathLike[str], plan: SegmentPlan) -> Path:
    """The cache folder of a plan's preprocessing inside ``root``."""
    return Path(root) / f"{plan.dataset}-{plan_hash(plan)}"


def _preprocess_one(dataset_root: str, case_id: str, plan_json: str, out: str) -> str:
    plan = SegmentPlan.model_validate_json(plan_json)
    dataset = Dataset.load(dataset_root, check_files=False)
    image = dataset.read_image(case_id)
    label = dataset.read_label(case_id)
    check_pair(
        image,
        label,
        case_id=case_id,
        labels=plan.labels,
        path=dataset.path(dataset.case(case_id).label or ""),
        allow_empty=plan.allow_empty_labels,
    )
    resampled = to_network_grid(image, plan)
    lab = to_network_grid(label, plan)
    arr = apply_normalization(resampled.array, plan)
    out_dir = Path(out)
    rng = np.random.default_rng(zlib.crc32(case_id.encode()))
    meta = {
        "case_id": case_id,
        "original_shape": list(image.spatial_shape),
        "original_spacing": list(image.spacing),
        "shape": list(arr.shape[1:]),
        "locations": _locations(lab.array[0], plan.num_classes, rng),
    }
    np.save(out_dir / f"{case_id}_image.npy", arr)
    np.save(out_dir / f"{case_id}_label.npy", lab.array.astype(np.uint8))
    tmp = out_dir / f"{case_id}.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, out_dir / f"{case_id}.json")  # written last: its presence marks the case complete
    return case_id


def preprocess_dataset(
    dataset: Dataset,
    plan: SegmentPlan,
    cache: str | os.PathLike[str],
    case_ids: Sequence[str],
    *,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Preprocess ``case_ids`` into ``cache`` (skipping cases already there) with parallel workers.

    Returns:
        The plan's cache folder.

    Raises:
        DatasetError: A case fails its checks (the first failure, naming the case).
    """
    out = cache_dir_for(cache, plan)
    out.mkdir(parents=True, exist_ok=True)
    todo = [c for c in case_ids if not (out / f"{c}.json").exists()]
    done = len(case_ids) - len(todo)
    if progress:
        progress(done, len(case_ids))
    if not todo:
        return out
    plan_json = plan.model_dump_json()
    if workers <= 1:
        for c in todo:
            _preprocess_one(str(dataset.root), c, plan_json, str(out))
            done += 1
            if progress:
                progress(done, len(case_ids))
        return out
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_preprocess_one, str(dataset.root), c, plan_json, str(out)) for c in todo]
        try:
            for fut in as_completed(futures):
                fut.result()
                done += 1
                if progress:
                    progress(done, len(case_ids))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out


def load_case(cache: Path, case_id: str, *, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A cached case: image ``(C, *spatial)`` float32, label ``(1, *spatial)`` uint8, and its meta."""
    mode = "r" if mmap else None
    image = np.load(cache / f"{case_id}_image.npy", mmap_mode=mode)
    label = np.load(cache / f"{case_id}_label.npy", mmap_mode=mode)
    meta = json.loads((cache / f"{case_id}.json").read_text())
    return image, label, meta
