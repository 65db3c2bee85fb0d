"""Sliding-window inference with Gaussian blending, mirroring TTA and memory bounded by one slab of windows.

Windows are visited slab by slab along the last spatial axis. Probabilities accumulate in a float32 buffer
as deep as one window; whatever no later window can reach is finalised (argmax, or stored as float16) and the
buffer slides on. Memory is therefore ``classes x X x Y x window_z`` floats however deep the volume is, plus
the output itself (one byte per voxel for labels).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from deepmia._validate import look_up_option
from deepmia.engine.runtime import autocast
from deepmia.errors import InvalidArgumentError

__all__ = ["window_starts", "gaussian_importance", "sliding_window"]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows of ``window`` voxels covering ``size`` with at least ``overlap`` overlap."""
    if size <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    n = math.ceil((size - window) / step) + 1
    return sorted({int(round(i * (size - window) / (n - 1))) for i in range(n)})


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian weight map peaking at the window centre (nnU-Net's blending), floored at 1e-4."""
    weights = np.ones((), dtype=np.float32)
    for w in window:
        x = np.arange(w, dtype=np.float32) - (w - 1) / 2.0
        g = np.exp(-0.5 * (x / max(w * sigma_scale, 1e-3)) ** 2)
        weights = np.multiply.outer(weights, g)
    # Edges keep a small positive weight so that every voxel is covered and the division stays exact.
    return np.maximum(weights / weights.max(), 1e-4).astype(np.float32)


def _flips(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    return [c for r in range(len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]


class _SlabBuffer:
    """Blended scores of one window-deep slab along the last axis, finalised into the output as the slab slides.

    Buffer column 0 is image index ``lo`` along the last axis; columns a later window can no longer reach are
    divided by their weight sum and written out (argmax, or probabilities as float16).
    """

    def __init__(self, shape: tuple[int, ...], depth: int, num_classes: int, out: str) -> None:
        last = len(shape) - 1
        self.labels = out == "labels"
        self.label_dtype = np.uint8 if num_classes <= 256 else np.int16
        self.result = (
            np.empty(shape, dtype=self.label_dtype)
            if self.labels
            else np.empty((num_classes, *shape), dtype=np.float16)
        )
        self.acc = torch.zeros((num_classes, *shape[:last], depth), dtype=torch.float32)
        self.wsum = torch.zeros((*shape[:last], depth), dtype=torch.float32)
        self.depth = depth
        self.lo = 0

    def add(self, region: tuple[slice, ...], probs: torch.Tensor, weights: torch.Tensor) -> None:
        """Accumulate one window's ``probs`` times ``weights`` at ``region`` (all axes but the last)."""
        self.acc[(slice(None), *region, slice(None))] += probs * weights
        self.wsum[(*region, slice(None))] += weights

    def finalise(self, upto: int) -> None:
        """Write out image indices ``lo`` to ``upto`` along the last axis."""
        n = upto - self.lo
        if n <= 0:
            return
        probs = self.acc[..., :n] / self.wsum[..., :n].clamp_min(1e-12)
        if self.labels:
            self.result[..., self.lo : upto] = probs.argmax(0).numpy().astype(self.label_dtype)
        else:
            self.result[..., self.lo : upto] = probs.numpy().astype(np.float16)

    def shift(self, to: int) -> None:
        """Finalise everything before ``to`` and slide the buffer so that column 0 is index ``to``."""
        n = to - self.lo
        if n <= 0:
            return
        self.finalise(to)
        acc, wsum, wz = self.acc, self.wsum, self.depth
        if n >= wz:
            acc.zero_()
            wsum.zero_()
        else:
            acc[..., : wz - n] = acc[..., n:].clone()
            acc[..., wz - n :] = 0
            wsum[..., : wz - n] = wsum[..., n:].clone()
            wsum[..., wz - n :] = 0
        self.lo = to


def _check_arguments(
    image: np.ndarray, window: Sequence[int], overlap: float, mirror_axes: Sequence[int], out: str
) -> tuple[str, tuple[int, ...]]:
    """The output kind looked up and the window as integers; refuses a bad overlap, window or mirror axis."""
    out = look_up_option(out, ("labels", "probabilities"), what="out")
    if not 0 <= overlap < 1:
        raise InvalidArgumentError(f"overlap must be in [0, 1), got {overlap}")
    spatial = tuple(image.shape[1:])
    window = tuple(int(w) for w in window)
    if len(window) != len(spatial):
        raise InvalidArgumentError(
            f"window {window} has {len(window)} axes but the image has {len(spatial)} spatial axes"
        )
    for ax in mirror_axes:
        if not 0 <= ax < len(spatial):
            raise InvalidArgumentError(f"mirror axis {ax} is outside 0..{len(spatial) - 1}")
    return out, window


def _predict_mirrored(
    predict: Callable[[torch.Tensor], torch.Tensor],
    batch: torch.Tensor,
    flips: list[tuple[int, ...]],
    num_classes: int,
    precision: str,
    device_type: str | None,
) -> torch.Tensor:
    """Float32 scores of a batch of windows, averaged over the mirrored copies (each flipped back)."""
    probs = torch.zeros((batch.shape[0], num_classes, *batch.shape[2:]), dtype=torch.float32)
    for flip in flips:
        dims = [a + 2 for a in flip]
        x = torch.flip(batch, dims) if dims else batch
        with autocast(precision, device_type):
            y = predict(x)
        y = y.float()
        probs += torch.flip(y, dims) if dims else y
    probs /= len(flips)
    return probs


def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray,
    *,
    window: Sequence[int],
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    gaussian: bool = True,
    mirror_axes: Sequence[int] = (),
    precision: str = "fp32",
    out: str = "labels",
    device_type: str | None = None,
) -> np.ndarray:
    """Predict a whole image from windows of the network's input size.

    Args:
        predict: Maps a batch ``(B, C, *window)`` float32 tensor to per-class scores ``(B, K, *window)``;
            pass probabilities (softmax) so that blending and mirroring average probabilities.
        image: ``(C, *spatial)`` array, already preprocessed (normalised, on the network's grid).
        window: Window size per spatial axis; an image smaller than it is padded with zeros and cropped back.
        num_classes: ``K``.
        overlap: Fraction of overlap between neighbouring windows, in [0, 1).
        batch_size: Windows per forward pass.
        gaussian: Blend with a Gaussian importance map (else uniform).
        mirror_axes: Spatial axes (0-based) to mirror for test-time augmentation; every combination is run.
        precision: ``fp32`` or ``bf16`` autocast for the forward passes.
        out: ``labels`` (argmax as uint8, or int16 above 255 classes) or ``probabilities`` (float16, ``(K, *spatial)``).
        device_type: Device type of ``predict``'s network for autocast (``cpu`` or ``cuda``; default: the
            machine's default device). ``predict`` takes and returns CPU tensors.

    Returns:
        The label map ``(*spatial)`` or the probabilities ``(K, *spatial)``.
    """
    out, window = _check_arguments(image, window, overlap, mirror_axes, out)
    spatial = tuple(image.shape[1:])
    # Pad up to the window where the image is smaller; remember the crop.
    pad = [max(0, w - s) for w, s in zip(window, spatial, strict=True)]
    if any(pad):
        image = np.pad(image, [(0, 0)] + [(p // 2, p - p // 2) for p in pad])
    shape = tuple(image.shape[1:])
    array = np.ascontiguousarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())  # e.g. a read-only memory map
    weights = torch.from_numpy(gaussian_importance(window) if gaussian else np.ones(window, np.float32))
    flips = _flips(mirror_axes)

    starts = [window_starts(s, w, overlap) for s, w in zip(shape, window, strict=True)]
    last = len(shape) - 1
    inner = list(itertools.product(*starts[:last]))
    buffer = _SlabBuffer(shape, window[last], num_classes, out)
    with torch.no_grad():
        for z in starts[last]:
            buffer.shift(z)
            corners = [(*c, z) for c in inner]
            for b in range(0, len(corners), batch_size):
                chunk = corners[b : b + batch_size]
                batch = torch.stack(
                    [tensor[(slice(None), *(slice(s, s + w) for s, w in zip(c, window, strict=True)))] for c in chunk]
                )
                probs = _predict_mirrored(predict, batch, flips, num_classes, precision, device_type)
                for c, p in zip(chunk, probs, strict=True):
                    buffer.add(tuple(slice(s, s + w) for s, w in zip(c[:last], window[:last], strict=True)), p, weights)
        buffer.finalise(shape[last])

    result = buffer.result
    if any(pad):
        crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial, strict=True))
        result = result[crop] if out == "labels" else result[(slice(None), *crop)]
    return np.ascontiguousarray(result)
