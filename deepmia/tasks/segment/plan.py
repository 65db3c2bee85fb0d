"""The segmentation plan: every choice of a run, derived from the dataset fingerprint and the machine.

The rules follow nnU-Net's where they are known to work (median spacing, anisotropy handling, patch from the
median shape, pooling until feature maps are 4 voxels, Dice + CE with deep supervision, foreground
oversampling), scaled to the compute at hand: the patch's voxel budget and the batch size come from the
machine, the number of epochs from the wall-clock budget. Any field can be overridden (``key=value``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError
from deepmia.tasks._plan import StrictModel, apply_overrides, load_plan_file

__all__ = ["Normalization", "SegmentPlan", "make_plan", "load_plan", "apply_overrides", "plan_hash"]

PLAN_VERSION = 1


class Normalization(StrictModel):
    """Intensity normalisation of one channel.

    ``ct``: clip to the dataset's foreground [0.5, 99.5] percentiles, then z-score with the foreground mean/std
    (dataset-wide, because Hounsfield units are absolute). ``zscore``: per image, over the whole image.
    ``zscore_nonzero``: per image, over voxels != 0 (skull-stripped MR). ``rgb``: divide by 255, then z-score per image.
    """

    scheme: Literal["ct", "zscore", "zscore_nonzero", "rgb", "none"]
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None


class Schedule(StrictModel):
    """Optimiser and budget."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(3e-5, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    epochs: int = Field(1000, ge=1)
    steps_per_epoch: int = Field(250, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    warmup: float = Field(0.0, ge=0, lt=1)
    val_every: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: measure bf16 autocast against fp32 on a training step and keep the faster"
    )
    grad_clip: float | None = 12.0


class Inference(StrictModel):
    """Sliding-window settings."""

    overlap: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(4, ge=1)
    mirror_axes: list[int] = Field(default_factory=list)
    largest_component: list[int] = Field(default_factory=list, description="labels kept as their largest component")


class SegmentPlan(StrictModel):
    """A complete, validated segmentation run configuration (``plan.json``)."""

    task: Literal["segmentation"] = "segmentation"
    version: int = PLAN_VERSION
    dataset: str
    labels: dict[str, str]
    channels: list[str]
    modalities: list[str]
    spatial_dims: Literal[2, 3]
    target_spacing: list[float]
    anisotropic_axis: int | None = None
    normalization: list[Normalization]
    patch_size: list[int]
    batch_size: int = Field(ge=1)
    network: str = "dynunet"
    network_params: dict[str, Any]
    loss: str = "dice_ce"
    loss_params: dict[str, Any] = Field(default_factory=lambda: {"deep_supervision": True})
    oversample_foreground: float = Field(0.33, ge=0, le=1)
    augmentation: Literal["default", "light", "none"] = "default"
    schedule: Schedule = Field(default_factory=Schedule)
    inference: Inference = Field(default_factory=Inference)
    folds: int = Field(5, ge=2)
    seed: int = 0
    deterministic: bool = False
    allow_empty_labels: bool = False
    machine: dict[str, Any] = Field(default_factory=dict)
    fingerprint: dict[str, Any] = Field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Classes including background (label values must be 0..num_classes-1)."""
        return max(int(k) for k in self.labels) + 1

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return len(self.channels)

    def save(self, path: str | Path) -> Path:
        """Write as indented JSON."""
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


def plan_hash(plan: SegmentPlan) -> str:
    """Hash of the fields that change preprocessed data (cache key)."""
    keys = {"dataset", "labels", "channels", "target_spacing", "anisotropic_axis", "normalization", "spatial_dims"}
    blob = json.dumps(plan.model_dump(include=keys), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load_plan(path: str | Path) -> SegmentPlan:
    """Read and validate a segmentation plan file.

    Raises:
        InvalidArgumentError: Missing, not JSON, or not a valid plan (each bad field named).
    """
    return load_plan_file(SegmentPlan, path)


def _normalization(channel: dict[str, Any]) -> Normalization:
    modality = (channel.get("modality") or "").upper()
    fg = channel.get("intensity_foreground") or channel.get("intensity") or {}
    if modality == "CT" and fg:
        return Normalization(
            scheme="ct",
            clip=(fg["percentile_00_5"], fg["percentile_99_5"]),
            mean=fg["mean"],
            std=max(fg["std"], 1e-6),
        )
    if modality in ("RGB", "XC", "OP", "SM", "PHOTO"):
        return Normalization(scheme="rgb")
    return Normalization(scheme="zscore")


def _array_channels(dataset: Dataset, fingerprint: dict[str, Any]) -> list[tuple[str, str, Normalization]]:
    """Network input channels: ``(name, modality, normalisation)`` per array channel of a case's image.

    A dataset channel is one file; a multi-channel file (an RGB photograph) gives the network one input per
    colour, each normalised by its file's scheme and named ``RGB[0]``, ``RGB[1]``, ... Files read for this: the
    first case's, one by one.
    """
    from deepmia.io import read_image

    counts = [1] * len(dataset.spec.channels)
    if dataset.cases:
        counts = [read_image(dataset.path(rel)).num_channels for rel in dataset.cases[0].images]
    out = []
    for ch, fp, n in zip(dataset.spec.channels, fingerprint["channels"], counts, strict=True):
        norm = _normalization(fp)
        names = [ch.name] if n == 1 else [f"{ch.name}[{i}]" for i in range(n)]
        out += [(name, ch.modality or "", norm) for name in names]
    return out


def _target_spacing(spacing: list[dict[str, float]]) -> tuple[list[float], int | None]:
    median = [s["median"] for s in spacing]
    hi, lo = max(median), min(median)
    if hi / lo > 3:
        # nnU-Net: keep the coarse axis coarse, but not coarser than needed (its 10th percentile; we use the min).
        axis = int(np.argmax(median))
        target = list(median)
        target[axis] = max(spacing[axis]["min"], lo * 3)
        return target, axis
    return median, None


def _topology(
    patch: list[int], spacing: list[float], *, max_pools: int = 5, min_size: int = 4
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """Pool each axis while its feature map stays >= 2*min_size and its spacing not > 2x the finest (nnU-Net)."""
    dims = len(patch)
    sizes = list(patch)
    sp = list(spacing)
    strides: list[list[int]] = [[1] * dims]
    kernels: list[list[int]] = []
    # Kernel of the first stage: 1 along an axis much coarser than the others (anisotropic data).
    kernels.append([3 if s <= 2 * min(sp) else 1 for s in sp])
    for _ in range(max_pools):
        stride = [2 if sizes[d] >= 2 * min_size and sp[d] <= 2 * min(sp) else 1 for d in range(dims)]
        if not any(s == 2 for s in stride):
            break
        sizes = [sizes[d] // stride[d] for d in range(dims)]
        sp = [sp[d] * stride[d] for d in range(dims)]
        strides.append(stride)
        kernels.append([3 if s <= 2 * min(sp) else 1 for s in sp])
    pools = [int(np.prod([s[d] for s in strides])) for d in range(dims)]
    return pools, strides, kernels


def _patch_size(shape: list[float], spacing: list[float], budget: int) -> list[int]:
    """Start from the median shape; while over the voxel budget, shrink the axis largest in mm."""
    patch = [max(8.0, float(s)) for s in shape]
    while np.prod(patch) > budget:
        mm = [p * s for p, s in zip(patch, spacing, strict=True)]
        axis = int(np.argmax(mm))
        patch[axis] *= 0.9
    return [int(math.ceil(p)) for p in patch]


def _round_up(patch: list[int], pools: list[int]) -> list[int]:
    return [int(math.ceil(p / k) * k) for p, k in zip(patch, pools, strict=True)]


def make_plan(
    dataset: Dataset,
    fingerprint: dict[str, Any],
    *,
    machine: dict[str, Any],
    time_budget_s: float | None = None,
    folds: int = 5,
    seed: int = 0,
) -> SegmentPlan:
    """Derive a plan from a dataset's fingerprint (:func:`deepmia.data.stats.fingerprint`) and the machine.

    Raises:
        DatasetError: Not a segmentation dataset, no foreground label, or mixed 2D/3D cases.
    """
    spec = dataset.spec
    if spec.task != "segmentation":
        raise DatasetError(f"task is {spec.task!r}, not segmentation", path=dataset.root / "dataset.json")
    labels = dict(spec.labels) if isinstance(spec.labels, dict) else {}
    values = sorted(int(k) for k in labels)
    if len([v for v in values if v != 0]) == 0:
        raise DatasetError(
            "the label set is empty: no foreground label in 'labels'",
            path=dataset.root / "dataset.json",
            fix='name the classes, e.g. {"0": "background", "1": "lesion"}',
        )
    if values != list(range(len(values))):
        raise DatasetError(f"label values {values} are not 0..{len(values) - 1}", path=dataset.root / "dataset.json")
    dims = fingerprint["spatial_dims"]
    if not isinstance(dims, int):
        raise DatasetError(f"cases mix {dims} spatial dimensions", path=dataset.root / "dataset.json")
    spacing, aniso = _target_spacing(fingerprint["spacing"])
    median_shape = [
        fingerprint["shape"][d]["median"] * fingerprint["spacing"][d]["median"] / spacing[d] for d in range(dims)
    ]
    gpu = bool(machine.get("gpu"))
    # Voxel budget of one patch: nnU-Net's 3D default is about 128^3 on a GPU; a CPU gets a smaller one.
    budget = (128**3 if gpu else 64**3) if dims == 3 else (1024**2 if gpu else 256**2)
    patch = _patch_size(median_shape, spacing, budget)
    pools, strides, kernels = _topology(patch, spacing)
    patch = _round_up(patch, pools)
    base = 32
    cap = 320 if dims == 3 else 512
    filters = [min(base * 2**i, cap) for i in range(len(strides))]
    batch = (2 if dims == 3 else 12) if not gpu else (4 if dims == 3 else 24)
    mirror = list(range(dims))
    inputs = _array_channels(dataset, fingerprint)
    if time_budget_s is not None and time_budget_s < 4 * 3600:
        # A short budget (a few thousand steps): AdamW converges faster than nnU-Net's SGD schedule, which is
        # tuned for 250k steps; a brief warm-up keeps the first Adam steps stable.
        schedule = Schedule(time_budget_s=time_budget_s, optimizer="adamw", lr=2e-3, weight_decay=3e-5, warmup=0.02)
    else:
        schedule = Schedule(time_budget_s=time_budget_s, epochs=1000)
    return SegmentPlan(
        dataset=spec.name,
        labels={str(k): labels[str(k)] for k in values},
        channels=[name for name, _, _ in inputs],
        modalities=[modality for _, modality, _ in inputs],
        spatial_dims=dims,
        target_spacing=[float(s) for s in spacing],
        anisotropic_axis=aniso,
        normalization=[norm for _, _, norm in inputs],
        patch_size=patch,
        batch_size=batch,
        network_params={
            "filters": filters,
            "strides": strides,
            "kernels": kernels,
            "deep_supervision": True,
            "deep_supervision_heads": max(1, min(2, len(strides) - 2)),
        },
        schedule=schedule,
        inference=Inference(mirror_axes=mirror),
        folds=folds,
        seed=seed,
        machine=machine,
        fingerprint={
            k: fingerprint[k] for k in ("num_cases", "num_patients", "shape", "spacing", "labels") if k in fingerprint
        },
    )
