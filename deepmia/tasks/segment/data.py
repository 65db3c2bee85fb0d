"""Training batches: patches sampled from cached cases (with foreground oversampling) and batch augmentation.

Augmentation runs on whole batches in torch (one ``grid_sample`` for rotation and scaling, flips, intensity
changes), with parameters drawn per sample, so no volume is copied or converted per patch.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.tasks.segment.plan import SegmentPlan
from deepmia.tasks.segment.preprocess import load_case

__all__ = ["PatchSampler", "augment_batch", "background_batches"]


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


def _rotation(dims: int, angles: np.ndarray) -> np.ndarray:
    if dims == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    return rot


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
    spatial ranges; ``none`` returns the batch unchanged.
    """
    if preset == "none":
        return images, labels
    b, dims = images.shape[0], images.dim() - 2
    rot_range = math.radians(30 if preset == "default" else 15)
    scale_range = (0.7, 1.4) if preset == "default" else (0.85, 1.2)
    thetas = []
    spatial = False
    for _ in range(b):
        m = np.eye(dims)
        if rng.random() < 0.2:
            m = _rotation(dims, rng.uniform(-rot_range, rot_range, size=1 if dims == 2 else 3)) @ m
            spatial = True
        if rng.random() < 0.2:
            m = m / rng.uniform(*scale_range)
            spatial = True
        theta = np.zeros((dims, dims + 1))
        # grid_sample's coordinates run x, y(, z) = last axis first: reverse the axis order.
        theta[:, :dims] = m[::-1, ::-1]
        thetas.append(theta)
    if spatial:
        theta_t = torch.tensor(np.stack(thetas), dtype=torch.float32)
        grid = F.affine_grid(theta_t, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    for ax in mirror_axes:
        flip = torch.from_numpy(rng.random(b) < 0.5)
        if flip.any():
            images[flip] = torch.flip(images[flip], [ax + 2])
            labels[flip] = torch.flip(labels[flip], [ax + 2])
    images = images.clone()
    for i in range(b):
        x = images[i]
        if rng.random() < 0.1:
            x += torch.randn_like(x) * float(rng.uniform(0, 0.1))
        if rng.random() < 0.15:
            x *= float(rng.uniform(0.75, 1.25))
        if rng.random() < 0.15:
            mean = x.mean()
            x.sub_(mean).mul_(float(rng.uniform(0.75, 1.25))).add_(mean)
        if rng.random() < 0.3:
            lo, hi = x.min(), x.max()
            span = (hi - lo).clamp_min(1e-6)
            gamma = float(rng.uniform(0.7, 1.5))
            x.copy_(((x - lo) / span).pow(gamma) * span + lo)
    return images, labels


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
