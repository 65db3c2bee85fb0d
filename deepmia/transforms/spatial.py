"""Spatial transforms: mirror, 90-degree turns, affine warps (rotation, scaling, translation), resizing, crops.

Each deterministic transform moves the image, the label map (nearest neighbour, still integral) and the boxes
together; its random twin draws the parameters. Kernels that the tasks also use on their own (box mirroring and
cropping, array resizing, rotation matrices) are public functions here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deepmia.errors import InvalidArgumentError
from deepmia.transforms.base import (
    RandomTransform,
    Transform,
    check_interval,
    check_probability,
    fires,
    register,
    uniform,
)

__all__ = [
    "rotation_matrix", "mirror_boxes", "crop_boxes", "resize_array",
    "Mirror", "Rot90", "Affine", "Resize", "Crop",
    "RandomMirror", "RandomRot90", "RandomAffine", "RandomResize", "RandomCrop",
]


def _is_numpy(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def _torch(x: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)) if _is_numpy(x) else x


# ------------------------------------------------------------------------------------------------- kernels
def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """A rotation matrix in array-axis order.

    One angle (radians) in 2D; in 3D three, about axes 0, 1 and 2, composed in that order (``R0 @ R1 @ R2``).

    Example:
        >>> np.round(rotation_matrix([math.pi / 2]), 6).tolist()
        [[0.0, -1.0], [1.0, 0.0]]
    """
    return rotation_matrices(np.asarray(angles, float)[None])[0]


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(n, d, d)`` from angles ``(n, 1)`` (2D) or ``(n, 3)`` (3D); see :func:`rotation_matrix`."""
    n, k = angles.shape
    c, s = np.cos(angles), np.sin(angles)
    if k == 1:
        return np.stack([np.stack([c[:, 0], -s[:, 0]], 1), np.stack([s[:, 0], c[:, 0]], 1)], 1)
    rot = np.broadcast_to(np.eye(3), (n, 3, 3))
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        r = np.tile(np.eye(3), (n, 1, 1))
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c[:, axis], -s[:, axis], s[:, axis], c[:, axis]
        rot = rot @ r
    return rot


def mirror_boxes(boxes: np.ndarray, axis: int, length: float) -> np.ndarray:
    """Boxes of an image mirrored along ``axis`` of ``length`` pixels."""
    d = boxes.shape[1] // 2
    out = boxes.copy()
    out[:, axis], out[:, axis + d] = length - boxes[:, axis + d], length - boxes[:, axis]
    return out


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


def resized_shape(shape: Sequence[int], factor: float) -> tuple[int, ...]:
    """Spatial shape after resizing by ``factor`` (rounded, at least 1)."""
    return tuple(max(1, round(s * factor)) for s in shape)


def resize_array(array: np.ndarray, factor: float, *, order: int = 1) -> np.ndarray:
    """Resize every channel of ``(C, *spatial)`` by ``factor`` (OpenCV in 2D, SciPy in 3D).

    ``order`` 1 is linear; 0 is nearest neighbour (label maps keep their dtype).
    """
    if factor == 1.0:
        return array
    spatial = array.shape[1:]
    new = resized_shape(spatial, factor)
    if len(spatial) == 2:
        import cv2

        if order == 0:
            flag = cv2.INTER_NEAREST
            return np.stack([cv2.resize(ch.astype(np.int32), (new[1], new[0]), interpolation=flag)
                             for ch in array]).astype(array.dtype)
        return np.stack([cv2.resize(ch, (new[1], new[0]), interpolation=cv2.INTER_LINEAR) for ch in array])
    from scipy import ndimage

    zoom = [n / s for n, s in zip(new, spatial, strict=True)]
    return np.stack([ndimage.zoom(ch, zoom, order=order) for ch in array])


def _grid(matrices: np.ndarray, translations: np.ndarray, shape: Sequence[int], dtype: Any) -> Any:
    """``affine_grid`` of sampling matrices ``(n, d, d)`` and translations ``(n, d)`` in array-axis order."""
    import torch
    import torch.nn.functional as F

    d = matrices.shape[1]
    theta = np.zeros((len(matrices), d, d + 1))
    # grid_sample's coordinates run last axis first: reverse the axis order.
    theta[:, :, :d] = matrices[:, ::-1, ::-1]
    theta[:, :, d] = translations[:, ::-1]
    return F.affine_grid(torch.as_tensor(theta, dtype=dtype), list(shape), align_corners=False)


def _sample(x: Any, grid: Any, *, mode: str, padding: str) -> Any:
    import torch.nn.functional as F

    if x.dtype.is_floating_point and mode != "nearest":
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)
    # label maps: nearest neighbour on a float copy, back to the integral dtype
    out = F.grid_sample(x.to(grid.dtype), grid, mode="nearest", padding_mode=padding, align_corners=False)
    return out.to(x.dtype)


# ------------------------------------------------------------------------------------ deterministic transforms
@register
@dataclass(frozen=True)
class Mirror(Transform):
    """Mirror along spatial ``axes`` (0-based). Its own inverse."""

    axes: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True without axes."""
        return not self.axes

    def apply_image(self, x: Any) -> Any:
        """The array mirrored along each axis."""
        dims = tuple(a + 1 for a in self.axes)
        if _is_numpy(x):
            return np.ascontiguousarray(np.flip(x, dims))
        import torch

        return torch.flip(x, dims)

    def apply_label(self, y: Any) -> Any:
        """The label map mirrored like the image."""
        return self.apply_image(y)

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes mirrored with the pixels."""
        for ax in self.axes:
            boxes = mirror_boxes(boxes, ax, shape[ax])
        return boxes, labels

    def inverse(self) -> Mirror:
        """The same mirror."""
        return self

    @classmethod
    def apply_batch(cls, steps: Sequence[Transform], images: Any, labels: Any) -> None:
        """One flip per distinct set of axes."""
        import torch

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(steps):
            if not t.is_identity:
                groups.setdefault(t.axes, []).append(i)  # type: ignore[attr-defined]
        for axes, idx in groups.items():
            sel, dims = torch.as_tensor(idx), [a + 2 for a in axes]
            images[sel] = torch.flip(images[sel], dims)
            if labels is not None:
                labels[sel] = torch.flip(labels[sel], dims)


@register
@dataclass(frozen=True)
class Rot90(Transform):
    """Turn ``k`` quarter turns in the plane of spatial ``axes``, from the first axis towards the second."""

    k: int = 0
    axes: tuple[int, int] = (0, 1)

    @property
    def is_identity(self) -> bool:
        """True for a multiple of four quarter turns."""
        return self.k % 4 == 0

    def apply_image(self, x: Any) -> Any:
        """The array turned (``numpy.rot90`` / ``torch.rot90`` on the spatial axes)."""
        dims = (self.axes[0] + 1, self.axes[1] + 1)
        if _is_numpy(x):
            return np.ascontiguousarray(np.rot90(x, self.k % 4, axes=dims))
        import torch

        return torch.rot90(x, self.k % 4, dims)

    def apply_label(self, y: Any) -> Any:
        """The label map turned like the image."""
        return self.apply_image(y)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The two axes swap for an odd number of turns."""
        out = list(shape)
        if self.k % 2:
            a, b = self.axes
            out[a], out[b] = shape[b], shape[a]
        return tuple(out)

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes turned with the pixels (a point ``(p_a, p_b)`` goes to ``(n_b - p_b, p_a)`` per turn)."""
        a, b = self.axes
        d = boxes.shape[1] // 2
        shape = list(shape)
        for _ in range(self.k % 4):
            out = boxes.copy()
            out[:, a], out[:, a + d] = shape[b] - boxes[:, b + d], shape[b] - boxes[:, b]
            out[:, b], out[:, b + d] = boxes[:, a], boxes[:, a + d]
            boxes = out
            shape[a], shape[b] = shape[b], shape[a]
        return boxes, labels

    def inverse(self) -> Rot90:
        """The turn back."""
        return Rot90((-self.k) % 4, self.axes)


@register
@dataclass(frozen=True)
class Affine(Transform):
    """Resample through an affine map of normalised coordinates (each axis runs -1..1 across the array).

    The output at normalised point ``u`` is the input at ``matrix @ u + translation`` (array-axis order), so
    ``matrix = R / s`` rotates by ``R`` and zooms in by ``s``. Images are interpolated with ``interpolation``
    and ``padding`` outside; label maps with nearest neighbour (zeros outside). The spatial shape is kept.
    """

    matrix: tuple[tuple[float, ...], ...] = ((1.0, 0.0), (0.0, 1.0))
    translation: tuple[float, ...] = (0.0, 0.0)
    padding: str = "zeros"
    interpolation: str = "bilinear"

    @classmethod
    def from_arrays(cls, matrix: np.ndarray, translation: np.ndarray | None = None, **kwargs: Any) -> Affine:
        """Build from a ``(d, d)`` matrix and a ``(d,)`` translation (NumPy)."""
        matrix = np.asarray(matrix, float)
        t = np.zeros(len(matrix)) if translation is None else np.asarray(translation, float)
        return cls(tuple(tuple(r) for r in matrix.tolist()), tuple(t.tolist()), **kwargs)

    @property
    def is_identity(self) -> bool:
        """True for the identity matrix without translation."""
        eye = all(v == (i == j) for i, row in enumerate(self.matrix) for j, v in enumerate(row))
        return eye and not any(self.translation)

    def _warp(self, x: Any, *, label: bool) -> Any:
        t = _torch(x)
        dtype = t.dtype if t.dtype.is_floating_point else _float32()
        grid = _grid(np.asarray([self.matrix]), np.asarray([self.translation]), (1, *t.shape), dtype)
        mode = "nearest" if label else self.interpolation
        out = _sample(t[None], grid, mode=mode, padding="zeros" if label else self.padding)[0]
        return out.numpy() if _is_numpy(x) else out

    def apply_image(self, x: Any) -> Any:
        """The image resampled (``grid_sample``)."""
        return self._warp(x, label=False)

    def apply_label(self, y: Any) -> Any:
        """The label map resampled with nearest neighbour."""
        return self._warp(y, label=True)

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The enclosing box of each box's mapped corners, clipped to the image (boxes left empty are dropped)."""
        d = len(shape)
        if len(boxes) == 0:
            return boxes, labels
        n = np.asarray(shape, float)
        corners = np.stack([np.where(np.array(c, bool), boxes[:, d:], boxes[:, :d])
                            for c in itertools.product((0, 1), repeat=d)], axis=1)  # (N, 2^d, d)
        u = 2 * corners / n - 1
        out = (u - np.asarray(self.translation)) @ np.linalg.inv(np.asarray(self.matrix)).T
        p = (out + 1) * n / 2
        lo, hi = np.clip(p.min(axis=1), 0, n), np.clip(p.max(axis=1), 0, n)
        keep = (hi > lo).all(axis=1)
        return np.concatenate([lo, hi], axis=1)[keep].astype(boxes.dtype), labels[keep]

    def inverse(self) -> Affine:
        """The inverse map (values are interpolated twice, so a round trip is close, not exact)."""
        inv = np.linalg.inv(np.asarray(self.matrix))
        return Affine.from_arrays(inv, -inv @ np.asarray(self.translation), padding=self.padding,
                                  interpolation=self.interpolation)

    @classmethod
    def apply_batch(cls, steps: Sequence[Transform], images: Any, labels: Any) -> None:
        """One ``grid_sample`` for every sample that is not the identity."""
        idx = [i for i, t in enumerate(steps) if not t.is_identity]
        chosen = [steps[i] for i in idx]
        if not chosen:
            return None
        if len({(t.padding, t.interpolation) for t in chosen}) > 1:  # type: ignore[attr-defined]
            return Transform.apply_batch(steps, images, labels)
        import torch

        first: Affine = chosen[0]  # type: ignore[assignment]
        dtype = images.dtype if images.dtype.is_floating_point else _float32()
        grid = _grid(np.asarray([t.matrix for t in chosen]), np.asarray([t.translation for t in chosen]),  # type: ignore[attr-defined]
                     (len(idx), *images.shape[1:]), dtype)
        sel = torch.as_tensor(idx)
        whole = len(idx) == len(steps)
        x = images if whole else images[sel]
        images[sel] = _sample(x, grid, mode=first.interpolation, padding=first.padding)
        if labels is not None:
            y = labels if whole else labels[sel]
            labels[sel] = _sample(y, grid, mode="nearest", padding="zeros")


def _float32() -> Any:
    import torch

    return torch.float32


@register
@dataclass(frozen=True)
class Resize(Transform):
    """Resize by ``factor`` (linear for images, nearest for label maps; boxes scale with it)."""

    invertible: ClassVar[bool] = False
    factor: float = 1.0

    @property
    def is_identity(self) -> bool:
        """True for factor 1."""
        return self.factor == 1.0

    def _resize(self, x: Any, order: int) -> Any:
        if _is_numpy(x):
            return resize_array(x, self.factor, order=order)
        import torch

        return torch.from_numpy(resize_array(x.numpy(), self.factor, order=order))

    def apply_image(self, x: Any) -> Any:
        """The image resized (linear)."""
        return self._resize(x, 1)

    def apply_label(self, y: Any) -> Any:
        """The label map resized (nearest)."""
        return self._resize(y, 0)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``round(shape * factor)``."""
        return resized_shape(shape, self.factor)

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes times ``factor``."""
        return boxes * self.factor, labels


@register
@dataclass(frozen=True)
class Crop(Transform):
    """A window of ``size`` at ``origin`` (may reach outside: zeros there); boxes are clipped to it.

    Boxes with less than ``min_visible`` of their area inside are dropped.
    """

    invertible: ClassVar[bool] = False
    origin: tuple[int, ...] = ()
    size: tuple[int, ...] = ()
    min_visible: float = 0.0

    def _crop(self, x: Any) -> Any:
        size = list(self.size)
        if _is_numpy(x):
            out = np.zeros((x.shape[0], *size), x.dtype)
        else:
            import torch

            out = torch.zeros((x.shape[0], *size), dtype=x.dtype)
        src, dst = [], []
        for ax, (o, s) in enumerate(zip(self.origin, size, strict=True)):
            lo, hi = max(o, 0), min(o + s, x.shape[1 + ax])
            src.append(slice(lo, max(hi, lo)))
            dst.append(slice(lo - o, lo - o + max(hi - lo, 0)))
        out[(slice(None), *dst)] = x[(slice(None), *src)]
        return out

    def apply_image(self, x: Any) -> Any:
        """The window of the image."""
        return self._crop(x)

    def apply_label(self, y: Any) -> Any:
        """The window of the label map."""
        return self._crop(y)

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``size``."""
        return tuple(self.size)

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes moved into the window and clipped (mostly hidden ones dropped)."""
        return crop_boxes(boxes, labels, self.origin, self.size, min_visible=self.min_visible)


# ------------------------------------------------------------------------------------------ random twins
class RandomMirror(RandomTransform):
    """Mirror each of ``axes`` with probability ``p``, independently.

    Raises:
        InvalidArgumentError: ``p`` is not a probability.
    """

    keeps_shape = True

    def __init__(self, axes: Sequence[int], *, p: float = 0.5) -> None:
        self.axes = tuple(int(a) for a in axes)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """For each sample, the axes that fired."""
        fired = np.stack([fires(rng, self.p, n) for _ in self.axes], 1) if self.axes else np.zeros((n, 0), bool)
        made: dict[tuple[bool, ...], Mirror] = {}  # transforms are immutable: one object per combination
        for row in map(tuple, fired.tolist()):
            if row not in made:
                made[row] = Mirror(tuple(ax for ax, f in zip(self.axes, row, strict=True) if f))
        return [made[row] for row in map(tuple, fired.tolist())]


class RandomRot90(RandomTransform):
    """With probability ``p``, 1, 2 or 3 quarter turns (equally likely) in the plane of ``axes``.

    Raises:
        InvalidArgumentError: ``p`` is not a probability, or ``axes`` is not two different axes.
    """

    def __init__(self, axes: Sequence[int] = (0, 1), *, p: float = 1.0) -> None:
        if len(axes) != 2 or axes[0] == axes[1]:
            raise InvalidArgumentError(f"axes={tuple(axes)!r} is not a plane", fix="give two different spatial axes")
        self.axes = (int(axes[0]), int(axes[1]))
        self.p = check_probability("p", p)

    def sample(self, rng: np.random.Generator, shape: Sequence[int], boxes: np.ndarray | None = None) -> Rot90:
        """The number of turns."""
        return Rot90(int(1 + rng.integers(3)) if fires(rng, self.p, 1)[0] else 0, self.axes)


class RandomAffine(RandomTransform):
    """Random rotation, zoom and translation, drawn independently.

    Args:
        degrees: Rotation angles are uniform in ``+-degrees`` (one angle in 2D, one about each axis in 3D).
        scale: The zoom factor ``s`` is uniform in this range (sampling matrix ``R / s``: ``s > 1`` zooms in).
        translate: Shift per axis uniform in ``+-translate`` of the array size.
        p_rotate: Probability of a rotation.
        p_scale: Probability of a zoom.
        padding: ``grid_sample`` padding of the image (``zeros``, ``border``, ``reflection``).

    Raises:
        InvalidArgumentError: A probability outside [0, 1] or a reversed or non-positive scale range.
    """

    keeps_shape = True

    def __init__(self, *, degrees: float = 0.0, scale: Sequence[float] = (1.0, 1.0), translate: float = 0.0,
                 p_rotate: float = 1.0, p_scale: float = 1.0, padding: str = "zeros") -> None:
        self.radians = math.radians(degrees)
        self.scale = check_interval("scale", scale)
        if self.scale[0] <= 0:
            raise InvalidArgumentError(f"scale={tuple(scale)!r} must be positive", fix="give zoom factors above 0")
        self.translate = float(translate)
        self.p_rotate = check_probability("p_rotate", p_rotate)
        self.p_scale = check_probability("p_scale", p_scale)
        self.padding = padding

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """Angles, zoom and shift of ``n`` samples with ``len(shape)`` spatial dimensions."""
        d = len(shape)
        m = np.tile(np.eye(d), (n, 1, 1))
        if self.radians:
            rotate = fires(rng, self.p_rotate, n)
            angles = rng.uniform(-self.radians, self.radians, size=(int(rotate.sum()), 1 if d == 2 else 3))
            m[rotate] = rotation_matrices(angles)
        if self.scale != (1.0, 1.0):
            zoom = fires(rng, self.p_scale, n)
            m[zoom] /= uniform(rng, *self.scale, int(zoom.sum()))[:, None, None]
        shift = rng.uniform(-1, 1, (n, d)) * self.translate * 2 if self.translate else np.zeros((n, d))  # -1..1: 2
        return [Affine(tuple(map(tuple, a)), tuple(t), self.padding) for a, t in zip(m.tolist(), shift.tolist(),
                                                                                     strict=True)]


class RandomResize(RandomTransform):
    """Resize by a factor uniform in ``scale`` (log-uniform with ``log=True``).

    Raises:
        InvalidArgumentError: A reversed or non-positive range.
    """

    def __init__(self, scale: Sequence[float], *, log: bool = False) -> None:
        self.scale = check_interval("scale", scale)
        if self.scale[0] <= 0:
            raise InvalidArgumentError(f"scale={tuple(scale)!r} must be positive", fix="give factors above 0")
        self.log = log

    def sample(self, rng: np.random.Generator, shape: Sequence[int], boxes: np.ndarray | None = None) -> Resize:
        """The factor."""
        lo, hi = self.scale
        if lo == hi:
            return Resize(lo)
        return Resize(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if self.log else float(rng.uniform(lo, hi)))


class RandomCrop(RandomTransform):
    """A window of ``size``: uniform over the image, or (with probability ``object_fraction``) around a box.

    An object-centred window is centred on a random box, moved by up to ``jitter`` of the window size per axis,
    and kept inside the image where it fits.

    Args:
        size: Window size.
        object_fraction: Probability of centring on a box (when the sample has boxes).
        jitter: Largest centre shift, as a fraction of the window size.
        min_visible: Boxes with less of their area inside the window are dropped.
    """

    def __init__(self, size: Sequence[int], *, object_fraction: float = 0.0, jitter: float = 0.25,
                 min_visible: float = 0.0) -> None:
        self.size = tuple(int(s) for s in size)
        self.object_fraction = check_probability("object_fraction", object_fraction)
        self.jitter = float(jitter)
        self.min_visible = float(min_visible)

    def sample(self, rng: np.random.Generator, shape: Sequence[int], boxes: np.ndarray | None = None) -> Crop:
        """The window origin."""
        shape_a, size = np.asarray(shape, float), np.asarray(self.size, float)
        low, high = np.minimum(0, shape_a - size), np.maximum(0, shape_a - size)
        if boxes is not None and len(boxes) and rng.random() < self.object_fraction:
            d = len(shape)
            box = np.asarray(boxes)[rng.integers(len(boxes))]
            centre = (box[:d] + box[d:]) / 2 + rng.uniform(-self.jitter, self.jitter, d) * size
            origin = np.clip(centre - size / 2, low, high)
        else:
            origin = rng.uniform(low, high)
        return Crop(tuple(int(round(o)) for o in origin), self.size, self.min_visible)
