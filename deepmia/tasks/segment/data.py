"""Training batches: patches sampled from cached cases (with foreground oversampling) and batch augmentation.

Augmentation draws its parameters per sample (:mod:`deepmia.transforms`) and runs them over the whole batch in
torch (one ``grid_sample`` for rotation and scaling, flips, intensity changes), so no volume is copied or
converted per patch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.tasks.segment.plan import SegmentPlan
from deepmia.tasks.segment.preprocess import load_case
from deepmia.transforms import (
    RandomAffine,
    RandomCompose,
    RandomContrast,
    RandomGamma,
    RandomIntensity,
    RandomMirror,
    RandomNoise,
    apply_batch,
)

__all__ = ["PatchSampler", "augmentation", "augment_batch", "background_batches"]


class PatchSampler:
    """Random patches of the plan's size from cached cases; a share of them centred on a foreground voxel.

    Args:
        cache: The plan's cache folder.
        case_ids: Cases to sample from.
        plan: The plan (patch size, batch size, oversampling, classes).
        seed: Random seed.
    """

    def __init__(self, cache: Path, case_ids: Sequence[str], plan: SegmentPlan, *, seed: int = 0) -> None:
        self.cases = [load_case(cache, c) for c in case_ids]
        self.patch = tuple(plan.patch_size)
        self.batch_size = plan.batch_size
        self.oversample = plan.oversample_foreground
        self.rng = np.random.default_rng(seed)
        self.classes = [k for k in range(1, plan.num_classes)]

    def _corner(self, shape: Sequence[int], centre: Sequence[int] | None) -> list[int]:
        corner = []
        for d, (s, p) in enumerate(zip(shape, self.patch, strict=True)):
            if centre is None:
                lo, hi = min(0, s - p), max(0, s - p)
                corner.append(int(self.rng.integers(lo, hi + 1)) if hi > lo else lo)
            else:
                corner.append(int(centre[d]) - p // 2)
        return corner

    def _crop(self, array: np.ndarray, corner: Sequence[int]) -> np.ndarray:
        """Crop ``(C, *spatial)`` at ``corner``; parts outside the array are zero."""
        out = np.zeros((array.shape[0], *self.patch), dtype=array.dtype)
        src, dst = [slice(None)], [slice(None)]
        for c, p, s in zip(corner, self.patch, array.shape[1:], strict=True):
            lo, hi = max(c, 0), min(c + p, s)
            src.append(slice(lo, hi))
            dst.append(slice(lo - c, hi - c))
        out[tuple(dst)] = array[tuple(src)]
        return out

    def sample(self, force_foreground: bool) -> tuple[np.ndarray, np.ndarray]:
        """One ``(image, label)`` patch pair."""
        image, label, meta = self.cases[int(self.rng.integers(len(self.cases)))]
        centre = None
        if force_foreground:
            present = [k for k in self.classes if meta["locations"].get(str(k))]
            if present:
                locs = meta["locations"][str(present[int(self.rng.integers(len(present)))])]
                centre = locs[int(self.rng.integers(len(locs)))]
        corner = self._corner(image.shape[1:], centre)
        return self._crop(image, corner), self._crop(label, corner)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch; as in nnU-Net, the last ``round(oversample * batch)`` samples (at least one) hold foreground."""
        n_fg = max(1, int(round(self.oversample * self.batch_size))) if self.oversample > 0 else 0
        pairs = [self.sample(i >= self.batch_size - n_fg) for i in range(self.batch_size)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        labels = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        return images, labels


def augmentation(preset: str, *, dims: int, mirror_axes: Sequence[int] = ()) -> RandomCompose:
    """The random augmentation of a plan's preset (``default`` or ``light``; see :func:`augment_batch`)."""
    light = preset == "light"
    return RandomCompose([
        RandomAffine(degrees=15 if light else 30, scale=(0.85, 1.2) if light else (0.7, 1.4), p_rotate=0.2,
                     p_scale=0.2, padding="zeros"),
        RandomMirror(mirror_axes, p=0.5),
        RandomNoise((0.0, 0.1), p=0.1),
        RandomIntensity(scale=(0.75, 1.25), p=0.15),
        RandomContrast((0.75, 1.25), p=0.15),
        RandomGamma((0.7, 1.5), p=0.3),
    ])


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    rng: np.random.Generator,
    preset: str = "default",
    mirror_axes: Sequence[int] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch ``(B, C, *spatial)`` / ``(B, 1, *spatial)``: rotation+scaling, mirroring, intensity.

    ``default`` follows nnU-Net's probabilities (rotation +-30 deg p=0.2, scaling 0.7-1.4 p=0.2, noise p=0.1,
    brightness p=0.15, contrast p=0.15, gamma p=0.3, mirroring p=0.5 per axis); ``light`` halves the
    spatial ranges; ``none`` returns the batch unchanged. Parameters are drawn per sample
    (:func:`augmentation`), then applied step by step over the batch (:func:`deepmia.transforms.apply_batch`:
    one ``grid_sample`` for the samples that rotate or zoom).
    """
    if preset == "none":
        return images, labels
    random = augmentation(preset, dims=images.dim() - 2, mirror_axes=mirror_axes)
    drawn = random.sample_many(rng, images.shape[2:], images.shape[0])
    return apply_batch(drawn, images, labels)


def background_batches(make: Any, *, prefetch: int = 3) -> Iterator[Any]:
    """Yield ``make()`` results forever, produced by a daemon thread ``prefetch`` batches ahead."""
    q: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                q.put(make())
        except BaseException as exc:  # handed to the consumer
            failure.append(exc)
            q.put(None)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is None and failure:
            raise failure[0]
        yield item
