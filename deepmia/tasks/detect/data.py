"""Detection data: checked cases in network space, the fingerprint, and box-aware augmentation.

Bad input is handled here, once, for training and evaluation alike:

* **Boxes outside the image** are refused (:class:`~deepmia.errors.DatasetError` naming the case, the box and
  the image size). The VOC and COCO importers already clip boxes that stick out and report each one, so a
  dataset that still holds one was edited by hand, and guessing what it meant would hide the error.
* **Zero-area boxes** and **unknown class names** are refused when the dataset is loaded
  (:class:`~deepmia.data.dataset.Box` and :class:`~deepmia.data.dataset.Dataset` validate them; the message
  names the case).
* **Images without boxes** are negatives: they train the background and count false positives in evaluation.
* ``ignore`` boxes (VOC ``difficult``, COCO ``iscrowd``) are left out of training targets and counted.

Random augmentation samples its parameters first (:func:`sample_augmentation`) and then applies them
deterministically (:func:`apply_augmentation`), so a sample can be replayed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepmia.data.dataset import Case, Dataset
from deepmia.errors import DatasetError
from deepmia.tasks.detect.plan import DetectPlan

__all__ = ["Sample", "check_boxes", "case_targets", "fingerprint", "resize", "load_samples", "Augment",
           "sample_augmentation", "apply_augmentation", "batches"]


@dataclass
class Sample:
    """One image in network space: normalised ``(C, *spatial)`` float32, boxes ``(N, 2d)`` and class indices."""

    case_id: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    original_shape: tuple[int, ...]


def check_boxes(case: Case, shape: Sequence[int], *, path: Any = None) -> None:
    """Refuse boxes that reach outside an image of spatial ``shape``.

    Raises:
        DatasetError: A box outside the image; the message names the case, the box and the image size.
    """
    d = len(shape)
    for box in case.boxes or []:
        if len(box.box) != 2 * d:
            raise DatasetError(f"case {case.id!r}: {len(box.box) // 2}D box {box.box} on a {d}D image", path=path)
        lo, hi = np.asarray(box.box[:d]), np.asarray(box.box[d:])
        if (lo < 0).any() or (hi > np.asarray(shape)).any():
            raise DatasetError(
                f"case {case.id!r}: {box.label} box {box.box} reaches outside the image of size {list(shape)}",
                path=path, fix="clip it to the image (the VOC/COCO importers clip and report such boxes) or fix it",
            )


def case_targets(case: Case, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes ``(N, 2d)``, class indices and the number of ``ignore`` boxes left out, in image pixels."""
    index = {n: i for i, n in enumerate(class_names)}
    kept = [b for b in case.boxes or [] if not b.ignore]
    d = len(kept[0].box) // 2 if kept else (len(case.shape) if case.shape else 2)
    boxes = np.array([b.box for b in kept], dtype=np.float32).reshape(-1, 2 * d)
    labels = np.array([index[b.label] for b in kept], dtype=np.int64)
    return boxes, labels, len(case.boxes or []) - len(kept)


def _spatial_shape(dataset: Dataset, case: Case) -> tuple[int, ...]:
    if case.shape is not None:
        return tuple(case.shape)
    return tuple(dataset.read_image(case).spatial_shape)


def fingerprint(dataset: Dataset, case_ids: Sequence[str], *, max_intensity_images: int = 64) -> dict[str, Any]:
    """Image shapes, box sizes (image pixels), class counts and channel statistics of the training cases.

    Raises:
        DatasetError: Not a detection dataset, or a box outside its image.
    """
    if dataset.task != "detection":
        raise DatasetError(f"dataset {dataset.name!r} is a {dataset.task} dataset", path=dataset.root,
                           fix="train detect needs a detection dataset (`deepmia dataset import voc|coco`)")
    names = dataset.spec.class_names()
    cases = [dataset.case(c) for c in case_ids]
    shapes, sizes, counts, negatives = [], [], dict.fromkeys(names, 0), 0
    for case in cases:
        shape = _spatial_shape(dataset, case)
        check_boxes(case, shape, path=dataset.root)
        shapes.append(shape)
        boxes, labels, _ = case_targets(case, names)
        negatives += len(boxes) == 0
        d = boxes.shape[1] // 2
        sizes.extend((boxes[:, d:] - boxes[:, :d]).tolist())
        for k in labels:
            counts[names[k]] += 1
    dims = {len(s) for s in shapes}
    if len(dims) != 1:
        raise DatasetError(f"dataset {dataset.name!r} mixes image dimensionalities {sorted(dims)}", path=dataset.root)
    step = max(1, len(cases) // max_intensity_images)
    sums = []
    for case in cases[::step]:
        a = dataset.read_image(case).array.astype(np.float64)
        a = a.reshape(a.shape[0], -1)
        sums.append((a.mean(axis=1), (a**2).mean(axis=1)))
    mean = np.mean([s[0] for s in sums], axis=0)
    std = np.sqrt(np.maximum(np.mean([s[1] for s in sums], axis=0) - mean**2, 0))
    return {"name": dataset.name, "class_names": names, "channels": [c.name for c in dataset.spec.channels],
            "spatial_dims": dims.pop(), "shapes": shapes, "box_sizes": sizes, "box_counts": counts,
            "negatives": negatives, "mean": mean.tolist(), "std": std.tolist()}


def resize(array: np.ndarray, factor: float, *, order: int = 1) -> np.ndarray:
    """Resize every channel of ``(C, *spatial)`` by ``factor`` (linear; OpenCV in 2D, SciPy in 3D)."""
    if factor == 1.0:
        return array
    spatial = array.shape[1:]
    new = tuple(max(1, round(s * factor)) for s in spatial)
    if len(spatial) == 2:
        import cv2

        return np.stack([cv2.resize(ch, (new[1], new[0]), interpolation=cv2.INTER_LINEAR) for ch in array])
    from scipy import ndimage

    zoom = [n / s for n, s in zip(new, spatial, strict=True)]
    return np.stack([ndimage.zoom(ch, zoom, order=order) for ch in array])


def normalize(array: np.ndarray, plan: DetectPlan) -> np.ndarray:
    """``(x - mean) / std`` per channel, float32."""
    n = plan.normalization
    shape = (-1,) + (1,) * (array.ndim - 1)
    mean = np.asarray(n.mean, np.float32).reshape(shape)
    std = np.asarray(n.std, np.float32).reshape(shape)
    return (array.astype(np.float32) - mean) / std


def load_samples(dataset: Dataset, case_ids: Sequence[str], plan: DetectPlan) -> tuple[list[Sample], int]:
    """Read, check, normalise and rescale cases into network space; returns the samples and ignored-box count.

    Raises:
        DatasetError: A box outside its image, or an image whose channels or dimensionality differ from the plan.
    """
    samples, ignored = [], 0
    for cid in case_ids:
        case = dataset.case(cid)
        image = dataset.read_image(case)
        if image.num_channels != plan.in_channels or image.spatial_dims != plan.spatial_dims:
            raise DatasetError(f"case {cid!r}: image of shape {image.array.shape}, the plan expects "
                               f"{plan.in_channels} channel(s) and {plan.spatial_dims}D", path=dataset.root)
        check_boxes(case, image.spatial_shape, path=dataset.root)
        boxes, labels, n_ignored = case_targets(case, plan.class_names)
        ignored += n_ignored
        array = resize(normalize(image.array, plan), plan.scale)
        samples.append(Sample(cid, array, boxes * plan.scale, labels, tuple(image.spatial_shape)))
    return samples, ignored


# --------------------------------------------------------------------------- augmentation
@dataclass
class Augment:
    """Parameters of one random augmentation (replayable with :func:`apply_augmentation`)."""

    scale: float
    origin: tuple[int, ...]  #: crop start in the scaled image (may be negative: padding)
    mirror: tuple[int, ...]
    intensity_scale: float
    intensity_shift: float


def sample_augmentation(sample: Sample, plan: DetectPlan, rng: np.random.Generator) -> Augment:
    """Draw scale, crop origin (half the crops centred on a random object), mirrors and intensity changes."""
    a = plan.augmentation
    scale = float(np.exp(rng.uniform(np.log(1 - a.scale), np.log(1 + a.scale)))) if a.scale else 1.0
    shape = np.array(sample.image.shape[1:]) * scale
    size = np.array(plan.input_size)
    if len(sample.boxes) and rng.random() < a.object_crop_fraction:
        d = plan.spatial_dims
        box = sample.boxes[rng.integers(len(sample.boxes))] * scale
        centre = (box[:d] + box[d:]) / 2 + rng.uniform(-0.25, 0.25, d) * size
        origin = np.clip(centre - size / 2, np.minimum(0, shape - size), np.maximum(0, shape - size))
    else:
        origin = rng.uniform(np.minimum(0, shape - size), np.maximum(0, shape - size))
    mirror = tuple(ax for ax in a.mirror_axes if rng.random() < 0.5)
    return Augment(scale, tuple(int(round(o)) for o in origin), mirror,
                   float(rng.uniform(1 - a.intensity_scale, 1 + a.intensity_scale)),
                   float(rng.uniform(-a.intensity_shift, a.intensity_shift)))


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, origin: Sequence[int], size: Sequence[int], *,
               min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes moved into a crop at ``origin`` of ``size`` and clipped to it.

    Boxes with less than ``min_visible`` of their area (volume) inside the crop are dropped.
    """
    d = len(size)
    if len(boxes) == 0:
        return boxes.reshape(0, 2 * d), labels
    o = np.asarray(origin, np.float32)
    moved = boxes - np.concatenate([o, o])
    clipped = np.concatenate([np.clip(moved[:, :d], 0, size), np.clip(moved[:, d:], 0, size)], axis=1)
    area = np.prod(moved[:, d:] - moved[:, :d], axis=1)
    kept = np.prod(np.clip(clipped[:, d:] - clipped[:, :d], 0, None), axis=1)
    keep = kept >= min_visible * area
    return clipped[keep], labels[keep]


def apply_augmentation(sample: Sample, aug: Augment, plan: DetectPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``aug``: the image crop ``(C, *input_size)``, its boxes and labels.

    Outside the image the crop is zero (the mean after normalisation).
    """
    d = plan.spatial_dims
    image = resize(sample.image, aug.scale)
    size = list(plan.input_size)
    out = np.zeros((image.shape[0], *size), np.float32)
    src, dst = [], []
    for ax in range(d):
        lo, hi = max(aug.origin[ax], 0), min(aug.origin[ax] + size[ax], image.shape[1 + ax])
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - aug.origin[ax], lo - aug.origin[ax] + max(hi - lo, 0)))
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    boxes, labels = crop_boxes(sample.boxes * aug.scale, sample.labels, aug.origin, size,
                               min_visible=plan.augmentation.min_visible)
    for ax in aug.mirror:
        out = np.flip(out, axis=1 + ax)
        boxes = mirror_boxes(boxes, ax, size[ax])
    out = out * aug.intensity_scale + aug.intensity_shift
    return np.ascontiguousarray(out), boxes.astype(np.float32), labels


def mirror_boxes(boxes: np.ndarray, axis: int, length: float) -> np.ndarray:
    """Boxes of an image mirrored along ``axis`` of ``length`` pixels."""
    d = boxes.shape[1] // 2
    out = boxes.copy()
    out[:, axis], out[:, axis + d] = length - boxes[:, axis + d], length - boxes[:, axis]
    return out


def batches(samples: Sequence[Sample], plan: DetectPlan, *, seed: int) -> Iterator[tuple[torch.Tensor, list[dict]]]:
    """Yield augmented batches forever: images ``(B, C, *input_size)`` and MONAI targets ``{"box", "label"}``."""
    rng = np.random.default_rng(seed)
    bs = min(plan.schedule.batch_size, len(samples))
    while True:
        order = rng.permutation(len(samples))
        for start in range(0, len(samples) - bs + 1, bs):
            images, targets = [], []
            for i in order[start:start + bs]:
                s = samples[i]
                img, boxes, labels = apply_augmentation(s, sample_augmentation(s, plan, rng), plan)
                images.append(torch.from_numpy(img))
                targets.append({"box": torch.from_numpy(boxes), "label": torch.from_numpy(labels)})
            yield torch.stack(images), targets
