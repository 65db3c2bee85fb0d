"""The detection plan: every choice of a run, derived from the training boxes, the image shapes and a budget.

Rules (no dataset-specific code; sizes below are in network pixels, after the plan's ``scale``):

* **Scale**: images are resized by one isotropic factor: the largest that keeps the median image within
  ``MAX_INPUT`` px per axis (2D: 512 on a CPU, 3D: 128), raised (up to 1) when that would shrink the smallest
  objects (5th percentile of the shorter box side) below ``MIN_OBJECT`` px.
* **Input size**: the scaled median image, capped at ``MAX_INPUT`` and rounded up to the network's stride;
  training crops have this size (images smaller are padded), larger images are predicted by sliding window.
* **Pyramid**: the finest level has stride 4 (stage 1 of the ResNet) when the smallest objects (2nd
  percentile of the box size ``sqrt(w h)``) are under 32 px, else 8; there are as many levels (each twice the
  stride of the last) as octaves from the smallest to the largest objects (98th percentile), 2 to 5.
* **Anchors**: each box is assigned to the level whose octave holds its size, its width and height are divided
  by that level's scale, and k-means (IoU distance) on these normalised shapes gives ``num_anchors`` anchor
  shapes; at level ``i`` they are multiplied by ``2**i``. So the anchors follow the boxes' sizes and aspect
  ratios (2D and 3D alike).
* **Augmentation** (box-aware): mirroring along every spatial axis, isotropic scaling (+-20%), random crops of
  the input size (half of them centred on an object), intensity scale and shift; the same mirrors are the
  test-time augmentation, fused by weighted box fusion.
* **Box selection**: per-class NMS at IoU 0.5 in 2D, 0.22 in 3D (MONAI's LUNA16 setting: in a volume, a second
  box on one object that misses the loose 3D hit criterion, IoU >= 0.1, is a false positive of the FROC).
* **Schedule**: AdamW (lr 1e-3, weight decay 1e-4, batch 8 in 2D / 2 in 3D), poly decay with 5% warm-up over a
  wall-clock budget; the epochs are fitted to the budget from a measured step time; model selection on
  validation mAP@0.5.

Any field can be overridden (``key=value``, values parsed as JSON).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from deepmia.errors import DatasetError
from deepmia.tasks._plan import StrictModel, apply_overrides, load_plan_file

__all__ = ["Normalization", "Anchors", "Augmentation", "Schedule", "Inference", "DetectPlan", "make_plan",
           "load_plan", "apply_overrides", "kmeans_shapes", "MAX_INPUT", "MIN_OBJECT", "NMS_IOU"]

PLAN_VERSION = 1
MAX_INPUT = {2: 384, 3: 128}  #: largest network input per axis on a CPU
MIN_OBJECT = 16.0  #: smallest object side (5th percentile) kept after scaling, in network pixels
NMS_IOU = {2: 0.5, 3: 0.22}  #: per-class NMS threshold by dimensionality


class Normalization(StrictModel):
    """Per-channel ``(x - mean) / std`` with dataset-wide statistics of the training images."""

    mean: list[float]
    std: list[float]


class Anchors(StrictModel):
    """Anchor shapes at the finest level (scaled by ``2**i`` at level ``i``) and the ATSS matcher's candidates."""

    base_shapes: list[list[float]] = Field(min_length=1)
    feature_map_scales: list[int] = Field(min_length=2)
    atss_candidates: int = Field(4, ge=1)


class Augmentation(StrictModel):
    """Random box-aware augmentation of every training crop (ranges are +-)."""

    mirror_axes: list[int] = Field(default_factory=list)
    scale: float = Field(0.2, ge=0, lt=1)
    object_crop_fraction: float = Field(0.5, ge=0, le=1)  #: crops centred on a random object
    intensity_scale: float = Field(0.15, ge=0, lt=1)
    intensity_shift: float = Field(0.15, ge=0)
    min_visible: float = Field(0.5, gt=0, le=1)  #: a cropped box is kept when this fraction of it stays inside


class Schedule(StrictModel):
    """Optimiser, batch and budget."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(8, ge=1)
    warmup: float = Field(0.05, ge=0, lt=1)
    max_epochs: int = Field(300, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    val_every: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16"] = "bf16"
    threads: int | None = Field(None, ge=1)
    sampler_per_image: int = Field(256, ge=1)  #: anchors per image in the loss (hard-negative sampler)
    positive_fraction: float = Field(0.3, gt=0, lt=1)


class Inference(StrictModel):
    """Box selection after the network, sliding windows and test-time augmentation."""

    score_threshold: float = Field(0.02, ge=0, lt=1)
    nms_threshold: float = Field(0.5, gt=0, le=1)
    topk_per_level: int = Field(1000, ge=1)
    max_detections: int = Field(100, ge=1)
    tta: bool = True
    wbf_iou: float = Field(0.55, gt=0, le=1)  #: IoU at which weighted box fusion merges TTA boxes
    window_overlap: float = Field(0.25, ge=0, lt=1)


class DetectPlan(StrictModel):
    """A complete, validated detection run configuration (``plan.json``)."""

    task: Literal["detection"] = "detection"
    version: int = PLAN_VERSION
    dataset: str
    class_names: list[str] = Field(min_length=1)
    channels: list[str] = Field(min_length=1)  #: the dataset's channel files (an RGB file is one)
    in_channels: int = Field(ge=1)  #: array channels the network sees (an RGB file gives three)
    spatial_dims: Literal[2, 3]
    scale: float = Field(gt=0)  #: network pixels per image pixel (isotropic)
    input_size: list[int]
    normalization: Normalization
    network: str = "retinanet"
    network_params: dict[str, Any] = Field(default_factory=dict)
    anchors: Anchors
    augmentation: Augmentation = Field(default_factory=Augmentation)
    schedule: Schedule = Field(default_factory=Schedule)
    inference: Inference = Field(default_factory=Inference)
    seed: int = 0
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    measurements: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DetectPlan:
        d = self.spatial_dims
        if len(self.input_size) != d:
            raise ValueError(f"input_size needs {d} entries, got {self.input_size}")
        bad = [s for s in self.anchors.base_shapes if len(s) != d or min(s) <= 0]
        if bad:
            raise ValueError(f"anchor shapes need {d} positive sizes, got {bad[0]}")
        if any(a not in range(d) for a in self.augmentation.mirror_axes):
            raise ValueError(f"mirror_axes {self.augmentation.mirror_axes} outside 0..{d - 1}")
        if len(self.normalization.mean) != self.in_channels or len(self.normalization.std) != self.in_channels:
            raise ValueError(f"normalization needs one mean and one std for each of the {self.in_channels} channels")
        return self

    @property
    def stride(self) -> int:
        """The coarsest pyramid stride: network inputs are padded to a multiple of it."""
        from deepmia.nn.detection import feature_strides

        return feature_strides(self.network_params["returned_layers"])[-1]


def load_plan(path: str | Path) -> DetectPlan:
    """Read and validate a plan file.

    Raises:
        InvalidArgumentError: Missing, not JSON or not a valid plan (each bad field named).
    """
    return load_plan_file(DetectPlan, path)


def _centered_iou(shapes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing one centre: ``(N, K)`` for shapes ``(N, d)`` and centres ``(K, d)``."""
    inter = np.prod(np.minimum(shapes[:, None], centres[None]), axis=2)
    union = np.prod(shapes, axis=1)[:, None] + np.prod(centres, axis=1)[None] - inter
    return inter / union


def kmeans_shapes(shapes: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """k-means of box shapes ``(N, d)`` with ``1 - IoU`` as distance (YOLOv2's anchor clustering); sorted by size.

    Centres start at quantiles of the box size (deterministic), move to the median shape of their members, and
    an empty cluster is re-seeded at the worst-fitted box. Fewer distinct shapes than ``k`` give fewer centres.
    """
    shapes = np.asarray(shapes, float)
    distinct = np.unique(shapes, axis=0)
    k = min(k, len(distinct))
    size = np.prod(shapes, axis=1)
    order = np.argsort(size, kind="stable")
    centres = shapes[order[np.linspace(0, len(shapes) - 1, k + 2)[1:-1].round().astype(int)]].copy()
    if len(np.unique(centres, axis=0)) < k:
        rng = np.random.default_rng(seed)
        centres = distinct[rng.choice(len(distinct), k, replace=False)]
    for _ in range(iterations):
        iou = _centered_iou(shapes, centres)
        assign = iou.argmax(axis=1)
        new = centres.copy()
        for j in range(k):
            members = shapes[assign == j]
            if len(members):
                new[j] = np.median(members, axis=0)
            else:
                new[j] = shapes[iou.max(axis=1).argmin()]
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(np.prod(centres, axis=1), kind="stable")]


def make_plan(
    fingerprint: dict[str, Any], *, time_budget_s: float | None = None, num_anchors: int = 3,
) -> DetectPlan:
    """Derive a plan from a detection fingerprint (:func:`deepmia.tasks.detect.data.fingerprint`).

    Args:
        fingerprint: ``name``, ``class_names``, ``channels``, ``spatial_dims``, ``shapes`` ``(N, d)``,
            ``box_sizes`` ``(M, d)`` (image pixels), ``box_counts`` per class, ``mean``/``std`` per channel.
        time_budget_s: Wall-clock training budget.
        num_anchors: Anchor shapes per position.

    Raises:
        DatasetError: The training images hold no boxes (nothing to plan anchors from).
    """
    dims = int(fingerprint["spatial_dims"])
    sizes = np.asarray(fingerprint["box_sizes"], float).reshape(-1, dims)
    if len(sizes) == 0:
        raise DatasetError(f"dataset {fingerprint['name']!r}: the training images hold no boxes",
                           fix="a detector needs annotated objects; negatives alone cannot plan anchors")
    shape = np.median(np.asarray(fingerprint["shapes"], float), axis=0)
    small_side = float(np.percentile(sizes.min(axis=1), 5))
    scale = min(MAX_INPUT[dims] / float(shape.max()), 1.0)
    if small_side * scale < MIN_OBJECT:
        scale = min(1.0, MIN_OBJECT / small_side)
    scaled = sizes * scale
    size = np.prod(scaled, axis=1) ** (1.0 / dims)
    s_min, s_max = float(np.percentile(size, 2)), float(np.percentile(size, 98))
    first = 1 if s_min < 32 else 2  # finest stride 4 or 8
    levels = int(np.clip(math.ceil(math.log2(max(s_max / s_min, 1.0)) + 1e-9), 2, 6 - first))
    returned = list(range(first, first + levels - 1))
    level = np.clip(np.floor(np.log2(np.maximum(size / s_min, 1.0))), 0, levels - 1)
    normalised = scaled / (2.0 ** level)[:, None]
    base = kmeans_shapes(normalised, num_anchors)
    stride = 4 * 2 ** (returned[-1] - 1) * 2
    input_size = [int(min(math.ceil(s * scale / stride) * stride, MAX_INPUT[dims])) for s in shape]
    return DetectPlan(
        dataset=fingerprint["name"],
        class_names=list(fingerprint["class_names"]),
        channels=list(fingerprint["channels"]),
        in_channels=len(fingerprint["mean"]),
        spatial_dims=dims,
        scale=round(scale, 6),
        input_size=input_size,
        normalization=Normalization(mean=fingerprint["mean"], std=[max(s, 1e-6) for s in fingerprint["std"]]),
        network_params={"widths": [32, 64, 128, 256], "blocks": [1, 1, 1, 1], "returned_layers": returned,
                        "fpn_channels": 64},
        anchors=Anchors(base_shapes=np.round(base, 2).tolist(), feature_map_scales=[2**i for i in range(levels)]),
        augmentation=Augmentation(mirror_axes=list(range(dims))),
        schedule=Schedule(batch_size=8 if dims == 2 else 2, time_budget_s=time_budget_s),
        inference=Inference(nms_threshold=NMS_IOU[dims]),
        fingerprint={
            "num_images": len(fingerprint["shapes"]),
            "negatives": int(fingerprint.get("negatives", 0)),
            "median_shape": shape.tolist(),
            "box_counts": fingerprint["box_counts"],
            "box_size_percentiles": {f"p{p}": np.percentile(sizes, p, axis=0).round(1).tolist() for p in (2, 50, 98)},
        },
    )
