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

Random augmentation samples its parameters first (:func:`sample_augmentation`, built from
:mod:`deepmia.transforms`) and then applies them deterministically (:func:`apply_augmentation`), so a sample can
be replayed.
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
from deepmia.transforms import (
    Compose,
    Crop,
    Intensity,
    Mirror,
    RandomCompose,
    RandomCrop,
    RandomIntensity,
    RandomMirror,
    RandomResize,
    Resize,
    crop_boxes,
    mirror_boxes,
    resize_array,
)
from deepmia.transforms import Sample as TransformSample

__all__ = ["Sample", "check_boxes", "case_targets", "fingerprint", "resize", "load_samples", "augmentation",
           "Augment", "sample_augmentation", "apply_augmentation", "crop_boxes", "mirror_boxes", "batches"]


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
    return resize_array(array, factor, order=order)


def apply_normalization(array: np.ndarray, plan: DetectPlan) -> np.ndarray:
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
        array = resize(apply_normalization(image.array, plan), plan.scale)
        samples.append(Sample(cid, array, boxes * plan.scale, labels, tuple(image.spatial_shape)))
    return samples, ignored


# --------------------------------------------------------------------------- augmentation
def augmentation(plan: DetectPlan) -> RandomCompose:
    """The plan's random augmentation: log-uniform scale, crop, mirrors, intensity scale and shift.

    The crop has the input size; ``object_crop_fraction`` of them are centred on a random object.
    """
    a = plan.augmentation
    return RandomCompose([
        RandomResize((1 - a.scale, 1 + a.scale), log=True),
        RandomCrop(plan.input_size, object_fraction=a.object_crop_fraction, jitter=0.25, min_visible=a.min_visible),
        RandomMirror(a.mirror_axes, p=0.5),
        RandomIntensity(scale=(1 - a.intensity_scale, 1 + a.intensity_scale),
                        shift=(-a.intensity_shift, a.intensity_shift)),
    ])


@dataclass
class Augment:
    """Parameters of one random augmentation, replayable with :func:`apply_augmentation`.

    A named view of the deterministic transforms :func:`augmentation` draws (:meth:`transform` rebuilds them).
    """

    scale: float
    origin: tuple[int, ...]  #: crop start in the scaled image (may be negative: padding)
    mirror: tuple[int, ...]
    intensity_scale: float
    intensity_shift: float

    def transform(self, plan: DetectPlan) -> Compose:
        """The deterministic transforms: resize, crop, mirror, intensity."""
        return Compose((Resize(self.scale), Crop(tuple(self.origin), tuple(plan.input_size),
                                                 plan.augmentation.min_visible),
                        Mirror(tuple(self.mirror)), Intensity(self.intensity_scale, self.intensity_shift)))


def sample_augmentation(sample: Sample, plan: DetectPlan, rng: np.random.Generator) -> Augment:
    """Draw scale, crop origin (half the crops centred on a random object), mirrors and intensity changes."""
    resize, crop, mirror, intensity = augmentation(plan).sample(rng, sample.image.shape[1:], sample.boxes).steps
    return Augment(resize.factor, crop.origin, mirror.axes, intensity.scale, intensity.shift)  # type: ignore[attr-defined]


def apply_augmentation(sample: Sample, aug: Augment, plan: DetectPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``aug``: the image crop ``(C, *input_size)``, its boxes and labels.

    Outside the image the crop is zero (the mean after normalisation).
    """
    out = aug.transform(plan)(TransformSample(sample.image, boxes=sample.boxes, box_labels=sample.labels))
    return np.ascontiguousarray(out.image, np.float32), out.boxes.astype(np.float32), out.box_labels


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
