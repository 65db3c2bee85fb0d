"""Spatial steps that change the grid: resample, resize, reorient, crop_foreground, pad.

Every step returns a new image whose affine maps the new voxels to the same world positions: a landmark keeps
its world coordinates (RAS+, mm). Label images are resampled by nearest neighbour and keep their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing._steps import as_float, stack_channels, step

__all__ = ["resample", "resize", "reorient", "crop_foreground", "pad", "ANISOTROPY_RATIO"]

#: Spacing ratio (largest / smallest) above which the coarse axis is interpolated on its own (nnU-Net's rule).
ANISOTROPY_RATIO = 3.0

_ORDERS = {"nearest": 0, "linear": 1, "cubic": 3}  # cubic: ITK's B-spline interpolator
Interpolation = Literal["nearest", "linear", "cubic"]


def _per_axis(name: str, value: float | Sequence[float], ndim: int) -> list[float]:
    """One value per spatial axis from a scalar or a sequence (plain Python: this runs on every call)."""
    v = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]
    if len(v) == 1:
        v = v * ndim
    if len(v) != ndim:
        raise InvalidArgumentError(f"{name} needs 1 or {ndim} values for a {ndim}D image, got {len(v)}")
    return v


def _zoom_pass(a: np.ndarray, ratio: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample ``a`` onto ``shape`` voxels of ``ratio`` old voxels each, outer corners fixed (SimpleITK kernel).

    Linear interpolation of float arrays uses torch's ``interpolate`` (``align_corners=False`` is exactly this grid,
    with edge clamping like ``mode="nearest"``): 3-4x faster than SimpleITK on the 1.4 M-voxel example CT, equal to
    ``scipy.ndimage.affine_transform`` to float32 rounding. Nearest and cubic (B-spline) use SimpleITK's resampler
    on a plain index grid, which gave scipy's values (identical for nearest) 2.5x faster than scipy.
    """
    if order == 1 and a.dtype in (np.float32, np.float64):
        import torch

        mode = "bilinear" if a.ndim == 2 else "trilinear"
        out = torch.nn.functional.interpolate(
            torch.from_numpy(np.ascontiguousarray(a))[None, None],
            size=tuple(int(n) for n in shape),
            mode=mode,
            align_corners=False,
        )
        return out[0, 0].numpy()
    import SimpleITK as sitk

    src = sitk.GetImageFromArray(a.view(np.uint8) if a.dtype == bool else a)  # ITK axes are ours reversed
    interp = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}[order]
    r = np.asarray(ratio, dtype=float)[::-1]
    out = sitk.Resample(
        src,
        [int(n) for n in shape][::-1],
        sitk.Transform(),
        interp,
        [float(v) for v in 0.5 * r - 0.5],
        [float(v) for v in r],
        np.eye(a.ndim).ravel().tolist(),
        0.0,
        src.GetPixelID(),
    )
    res = sitk.GetArrayFromImage(out)
    return res.view(bool) if a.dtype == bool else res


def _regrid(image: Image, new_shape: Sequence[int], order: int, order_z: int | None) -> Image:
    """Resample onto a grid with ``new_shape`` covering the same field of view (corners fixed)."""
    nd = image.spatial_dims
    new = [int(n) for n in new_shape]
    ratio = [o / n for o, n in zip(image.spatial_shape, new, strict=True)]  # old voxels per new voxel
    label = image.kind == "label"
    if label:
        order, order_z = 0, 0
    spacing = image.spacing
    coarse = spacing.index(max(spacing))
    separate = order_z is not None and order > 0 and max(spacing) / min(spacing) > ANISOTROPY_RATIO and nd == 3
    chans = []
    for c in range(image.num_channels):
        a = image.array[c] if label else as_float(image.array[c])
        if separate:
            r1, s1, r2 = list(ratio), list(new), [1.0] * nd
            r1[coarse], s1[coarse], r2[coarse] = 1.0, a.shape[coarse], ratio[coarse]
            a = _zoom_pass(a, r1, s1, order)
            a = _zoom_pass(a, r2, new, order_z)
        else:
            a = _zoom_pass(a, ratio, new, order)
        chans.append(a)
    out = stack_channels(chans)
    scale = np.eye(4)
    scale[range(nd), range(nd)] = ratio
    scale[:nd, 3] = [0.5 * r - 0.5 for r in ratio]
    return Image._derived(out, image, image.affine @ scale)  # positive scaling and a shift: still a valid affine


@step("resample", accepts_labels=True)
def resample(
    image: Image,
    *,
    spacing: float | tuple[float, ...] = 1.0,
    interpolation: Interpolation = "linear",
    order_z: Literal[0, 1, 3] | None = 0,
) -> Image:
    """Resample to a voxel ``spacing`` in mm (one value, or one per axis), keeping the field of view.

    Anisotropy-aware (as nnU-Net): when the largest spacing exceeds 3x the smallest, the in-plane axes are
    interpolated with ``interpolation`` and the coarse axis separately with spline order ``order_z`` (0, 1 or 3;
    0 = nearest, which avoids smearing across thick slices; ``None`` interpolates all axes together).
    Label images always use nearest neighbour and keep their dtype.
    """
    target = [float(v) for v in _per_axis("spacing", spacing, image.spatial_dims)]
    if any(v <= 0 for v in target):
        raise InvalidArgumentError(f"resample: spacing must be positive, got {target}")
    extent = np.asarray(image.spatial_shape) * np.asarray(image.spacing)
    new_shape = np.maximum(1, np.round(extent / target)).astype(int)
    return _regrid(image, new_shape, _ORDERS[interpolation], order_z)


@step("resize", accepts_labels=True)
def resize(image: Image, *, shape: tuple[int, ...], interpolation: Interpolation = "linear") -> Image:
    """Resize to ``shape`` voxels covering the same field of view (the spacing changes; labels: nearest)."""
    target = [int(v) for v in _per_axis("shape", shape, image.spatial_dims)]
    if any(v < 1 for v in target):
        raise InvalidArgumentError(f"resize: shape must be positive, got {target}")
    return _regrid(image, target, _ORDERS[interpolation], None)


def _axis_orientation(affine: np.ndarray) -> np.ndarray:
    """``nibabel.orientations.io_orientation`` of ``affine``, without its SVD when the voxel axes are world axes.

    For an axis-aligned affine (one non-zero per column, in distinct rows) the answer is read off the signs;
    anything else (oblique) goes through nibabel.
    """
    import nibabel.orientations as nio

    rows = affine[:3, :3].tolist()
    ornt = []
    for j in range(3):
        hits = [i for i in range(3) if rows[i][j] != 0.0]
        if len(hits) != 1:
            return nio.io_orientation(affine)
        ornt.append((hits[0], 1.0 if rows[hits[0]][j] > 0 else -1.0))
    if len({axis for axis, _ in ornt}) != 3:
        return nio.io_orientation(affine)
    return np.array(ornt)


@step("reorient", accepts_labels=True)
def reorient(image: Image, *, code: str = "RAS") -> Image:
    """Permute and flip the voxel axes so they point along ``code`` (e.g. ``RAS``, ``LPS``, ``PIR``).

    No interpolation: voxels are reordered and the affine updated, so world positions are unchanged.
    2D images take a two-letter code for their in-plane axes.
    """
    import nibabel.orientations as nio

    nd = image.spatial_dims
    code = code.upper()
    if len(code) != nd or len({c for c in code}) != nd:
        raise InvalidArgumentError(f"reorient: code {code!r} must have {nd} distinct letters for a {nd}D image")
    pairs = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
    if any(c not in pairs for c in code) or len({c if c in "RAS" else pairs[c] for c in code}) != nd:
        raise InvalidArgumentError(f"reorient: {code!r} is not an axis code; use one letter from each of L/R, A/P, S/I")
    current = _axis_orientation(image.affine)
    if nd == 2:
        third = nio.ornt2axcodes(current)[2]
        code = code + third
    wanted = nio.axcodes2ornt(tuple(code))
    transform = nio.ornt_transform(current, wanted)
    if nd == 2 and transform[2, 0] != 2:
        raise InvalidArgumentError(f"reorient: {code[:2]!r} would move the slice axis of a 2D image")
    shape3 = image.spatial_shape + (1,) * (3 - nd)
    arrays = [nio.apply_orientation(image.array[c].reshape(shape3), transform) for c in range(image.num_channels)]
    arrays = [a.reshape(a.shape[:nd]) for a in arrays]
    out = stack_channels([np.array(a, order="C") for a in arrays])  # a copy even when no axis moves
    affine = image.affine @ nio.inv_ornt_aff(transform, shape3)
    return Image._derived(out, image, affine)  # axes permuted and flipped: still a valid affine


def _translate(image: Image, array: np.ndarray, start: Sequence[int]) -> Image:
    """``image``'s geometry moved by ``start`` voxels (= affine @ translation), on plain floats: a few us."""
    s0, s1, s2 = [float(v) for v in start] + [0.0] * (3 - len(start))
    rows = image.affine.tolist()
    for r in rows[:3]:
        r[3] += r[0] * s0 + r[1] * s1 + r[2] * s2
    return Image._derived(array, image, np.array(rows))


def _bounding_box(fg: np.ndarray) -> tuple[list[int], list[int]] | None:
    """First and last index along each axis of a boolean mask (``None`` when it is empty), from ``any`` projections.

    Two boolean reductions over the mask instead of ``np.nonzero``'s index arrays for every foreground voxel
    (0.04 ms instead of 7 ms on the example CT's mask).
    """
    rest = fg.any(axis=0)  # projection onto axes 1..n-1
    if fg.ndim == 3:
        hits = [np.flatnonzero(fg.any(axis=(1, 2))), np.flatnonzero(rest.any(axis=1)), np.flatnonzero(rest.any(axis=0))]
    else:
        hits = [np.flatnonzero(fg.any(axis=1)), np.flatnonzero(rest)]
    if not hits[0].size:
        return None
    return [int(h[0]) for h in hits], [int(h[-1]) for h in hits]


@step("crop_foreground", accepts_labels=True)
def crop_foreground(
    image: Image,
    *,
    threshold: float = 0.0,
    margin: Annotated[float, Field(ge=0)] = 0.0,
) -> Image:
    """Crop to the bounding box of voxels above ``threshold`` (any channel), plus ``margin`` mm on each side.

    An image with no voxel above the threshold is returned whole.
    """
    fg = image.array[0] > threshold if image.num_channels == 1 else np.any(image.array > threshold, axis=0)
    box = _bounding_box(fg)
    if box is None:
        return image.with_array(image.array.copy())
    if margin:
        pad = [math.ceil(margin / s) for s in image.spacing]
        lo = [max(0, f - p) for f, p in zip(box[0], pad, strict=True)]
        hi = [min(n, e + 1 + p) for n, e, p in zip(fg.shape, box[1], pad, strict=True)]
    else:
        lo, hi = box[0], [e + 1 for e in box[1]]
    sl = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    return _translate(image, np.ascontiguousarray(image.array[sl]), lo)


@step("pad", accepts_labels=True)
def pad(
    image: Image,
    *,
    margin: int | tuple[int, ...] = 0,
    shape: tuple[int, ...] | None = None,
    mode: Literal["constant", "edge", "reflect"] = "constant",
    value: float = 0.0,
) -> Image:
    """Pad by ``margin`` voxels on both sides of each axis, and/or centred up to at least ``shape``.

    ``mode`` is ``constant`` (fill with ``value``; label images always get 0), ``edge`` or ``reflect``.
    """
    nd = image.spatial_dims
    m = [int(v) for v in _per_axis("margin", margin, nd)]
    if any(v < 0 for v in m):
        raise InvalidArgumentError(f"pad: margin must be >= 0, got {m}")
    before, after = list(m), list(m)
    if shape is not None:
        target = [int(v) for v in _per_axis("shape", shape, nd)]
        for i, (t, n) in enumerate(zip(target, image.spatial_shape, strict=True)):
            extra = max(0, t - (n + 2 * m[i]))
            before[i] += extra // 2
            after[i] += extra - extra // 2
    widths = [(0, 0)] + list(zip(before, after, strict=True))
    fill = 0 if image.kind == "label" else value
    arr = image.array
    if mode == "constant" and fill == 0:  # zeroed pages plus one copy: 30% faster than np.pad on the example CT
        out = np.zeros(tuple(n + b + a for n, (b, a) in zip(arr.shape, widths, strict=True)), arr.dtype)
        out[tuple(slice(b, b + n) for n, (b, _) in zip(arr.shape, widths, strict=True))] = arr
    elif mode == "constant":
        out = np.pad(arr, widths, mode="constant", constant_values=fill)
    else:
        out = np.pad(arr, widths, mode=mode)
    return _translate(image, out, [-b for b in before])
