"""The dataset fingerprint: sizes, geometry, intensities and class balance, as plain data.

Planning reads this to choose patch sizes, spacing, normalisation and sampling (as nnU-Net does from its
fingerprint). Intensity percentiles come from a fixed-size seeded sample of voxels per case, so memory stays
bounded; means, standard deviations and extremes are exact.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset

__all__ = ["fingerprint", "label_presence"]

Progress = Callable[[int, int], None]
SAMPLES_PER_CASE = 10_000


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not len(values):
        return None
    a = np.asarray(values, dtype=float)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def _per_axis(rows: list[Sequence[float]]) -> list[dict[str, float] | None] | None:
    if not rows or len({len(r) for r in rows}) != 1:
        return None
    a = np.asarray(rows, dtype=float)
    return [_summary(a[:, d]) for d in range(a.shape[1])]


def label_presence(dataset: Dataset, *, progress: Progress | None = None) -> dict[str, list[int]]:
    """Label values present in each case's label map (read from disk), by case id."""
    out: dict[str, list[int]] = {}
    for i, case in enumerate(dataset.cases):
        out[case.id] = [int(v) for v in np.unique(dataset.read_label(case).array)]
        if progress:
            progress(i + 1, len(dataset))
    return out


class _Moments:
    """Exact count/sum/sum of squares/min/max plus a seeded voxel sample for percentiles."""

    def __init__(self, seed: int) -> None:
        self.n = 0
        self.s = 0.0
        self.ss = 0.0
        self.lo = np.inf
        self.hi = -np.inf
        self.samples: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        v = values[np.isfinite(values)] if np.issubdtype(values.dtype, np.floating) else values
        if not v.size:
            return
        v64 = v.astype(np.float64, copy=False)
        self.n += v.size
        self.s += float(v64.sum())
        self.ss += float(np.square(v64).sum())
        self.lo = min(self.lo, float(v64.min()))
        self.hi = max(self.hi, float(v64.max()))
        take = min(SAMPLES_PER_CASE, v.size)
        self.samples.append(self.rng.choice(v64, size=take, replace=False) if take < v.size else v64.copy())

    def result(self) -> dict[str, float] | None:
        if not self.n:
            return None
        mean = self.s / self.n
        sample = np.concatenate(self.samples)
        p = np.percentile(sample, [0.5, 50, 99.5])
        return {
            "mean": mean,
            "std": float(np.sqrt(max(self.ss / self.n - mean * mean, 0.0))),
            "min": self.lo,
            "max": self.hi,
            "percentile_00_5": float(p[0]),
            "median": float(p[1]),
            "percentile_99_5": float(p[2]),
            "voxels": self.n,
        }


def _box_stats(dataset: Dataset) -> dict[str, Any]:
    names = dataset.spec.class_names()
    sizes: dict[str, list[list[float]]] = defaultdict(list)
    per_image = []
    for case in dataset.cases:
        boxes = case.boxes or []
        per_image.append(len(boxes))
        for b in boxes:
            sizes[b.label].append(b.size)
    return {
        "boxes_per_case": _summary(per_image),
        "cases_without_boxes": sum(1 for n in per_image if n == 0),
        "classes": {
            name: {"boxes": len(sizes[name]), "size": _per_axis(sizes[name]) if sizes[name] else None}
            for name in names
        },
    }


def fingerprint(dataset: Dataset, *, seed: int = 0, progress: Progress | None = None) -> dict[str, Any]:
    """Describe a dataset for planning: counts, shapes, spacings, intensities and class frequencies.

    Every case's image is read once (and its label map for segmentation); the label map must be on the
    image's grid.

    Args:
        dataset: The dataset.
        seed: Seed of the voxel sample behind the intensity percentiles.
        progress: Called as ``progress(done, total)`` after each case.

    Returns:
        Plain data (JSON-serialisable): ``name``, ``task``, ``num_cases``, ``num_patients``, ``spatial_dims``,
        ``shape`` and ``spacing`` (per axis min/median/max), ``channels`` (per channel intensity statistics,
        over all voxels and, for segmentation, over foreground voxels), and ``labels`` (segmentation: voxel
        fraction and number of cases per label value; classification: count per class; detection: box counts
        and sizes per class).

    Raises:
        DatasetError: A label map is not on its image's grid, or channels do not share a grid.
        ReadError: A file cannot be read.
    """
    spec = dataset.spec
    channels = [{"all": _Moments(seed + c), "foreground": _Moments(seed + 1000 + c)} for c in range(len(spec.channels))]
    shapes: list[tuple[int, ...]] = []
    spacings: list[tuple[float, ...]] = []
    dims: Counter[int] = Counter()
    voxels: Counter[int] = Counter()
    present: Counter[int] = Counter()
    total_voxels = 0
    for i, case in enumerate(dataset.cases):
        image = dataset.read_image(case)
        shapes.append(image.spatial_shape)
        spacings.append(image.spacing)
        dims[image.spatial_dims] += 1
        fg = None
        if spec.task == "segmentation":
            label = dataset.read_label(case, image=image)
            values, counts = np.unique(label.array, return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist(), strict=True):
                voxels[int(v)] += int(n)
                present[int(v)] += 1
            total_voxels += int(label.array.size)
            fg = label.array[0] > 0
        for c, moments in enumerate(channels):
            arr = image.array[c] if image.num_channels == len(channels) else image.array
            moments["all"].add(arr.ravel())
            if fg is not None:
                moments["foreground"].add(arr[..., fg].ravel())  # a multi-channel file pools its channels
        if progress:
            progress(i + 1, len(dataset))

    labels: dict[str, Any]
    if spec.task == "segmentation":
        names = spec.labels if isinstance(spec.labels, dict) else {}
        values = sorted({*map(int, names), *voxels})
        labels = {
            str(v): {
                "name": names.get(str(v), "(not in labels)"),
                "voxel_fraction": voxels[v] / total_voxels if total_voxels else 0.0,
                "cases_present": present[v],
            }
            for v in values
        }
    elif spec.task == "classification":
        counts: Counter[int] = Counter(c for case in dataset.cases for c in case.classes)
        labels = {name: counts[k] for k, name in enumerate(spec.class_names())}
    elif spec.task == "detection":
        labels = _box_stats(dataset)
    else:
        labels = {}
    same_dims = len(dims) == 1
    return {
        "name": spec.name,
        "task": spec.task,
        "num_cases": len(dataset),
        "num_patients": len(dataset.patients),
        "spatial_dims": next(iter(dims)) if same_dims else sorted(dims),
        "shape": _per_axis(shapes) if same_dims else None,
        "spacing": _per_axis(spacings) if same_dims else None,
        "channels": [
            {
                "name": ch.name,
                "modality": ch.modality,
                "intensity": channels[c]["all"].result(),
                **({"intensity_foreground": channels[c]["foreground"].result()} if spec.task == "segmentation" else {}),
            }
            for c, ch in enumerate(spec.channels)
        ],
        "labels": labels,
    }
