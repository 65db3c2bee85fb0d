"""Registration figures: checkerboard, colour overlay and deformation grid, before and after, on the fixed grid.

Each figure is one PNG with two panels (before: the moving image resampled onto the fixed grid with the
identity; after: warped by the registration) of the central slice (axial for volumes, radiological view, see
:mod:`deepmia.display`).
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from deepmia.display import save_png, slice_for_display, window_to_uint8
from deepmia.image import Image
from deepmia.processing.spatial_transform import SpatialTransform

__all__ = ["save_registration_figures"]


def _slice(image: Image) -> tuple[np.ndarray, float]:
    plane, aspect = slice_for_display(image, "axial")
    return plane[0].astype(np.float32), aspect


def _grey(image: Image) -> tuple[np.ndarray, float]:
    s, aspect = _slice(image)
    return window_to_uint8(s), aspect


def _checkerboard(a: np.ndarray, b: np.ndarray, *, tiles: int = 8) -> np.ndarray:
    size = max(1, max(a.shape) // tiles)
    yy, xx = np.indices(a.shape)
    board = ((yy // size + xx // size) % 2).astype(bool)
    return np.where(board, a, b)


def _pair(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def _overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Fixed in green, moving in magenta: aligned structures turn grey."""
    return np.stack([moving, fixed, moving], axis=-1)


def _grid_lines(reference: Image, *, every: int = 6) -> Image:
    arr = np.zeros(reference.spatial_shape, np.float32)
    for axis in range(reference.spatial_dims):
        index = [slice(None)] * reference.spatial_dims
        index[axis] = slice(0, None, every)
        arr[tuple(index)] = 1.0
    return reference.with_array(arr[None], kind="intensity")


def save_registration_figures(
    fixed: Image, moving: Image, warped: Image, transform: SpatialTransform, out_dir: str | PathLike[str]
) -> list[Path]:
    """Write ``checkerboard.png``, ``overlay.png`` and ``deformation_grid.png`` into ``out_dir``.

    Args:
        fixed: Fixed image.
        moving: Moving image (any grid).
        warped: ``moving`` warped onto the fixed grid by ``transform``.
        transform: The registration's fixed-to-moving transform.
        out_dir: Folder for the PNG files.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before_img = SpatialTransform.identity(fixed.spatial_dims).apply(moving, reference=fixed)
    f, aspect = _grey(fixed)
    lo, hi = np.percentile(_slice(warped)[0], [0.5, 99.5])
    before, after = (window_to_uint8(_slice(img)[0], (lo, hi)) for img in (before_img, warped))
    paths = []
    pictures = {
        "checkerboard.png": _pair(_rgb(_checkerboard(f, before)), _rgb(_checkerboard(f, after))),
        "overlay.png": _pair(_overlay(f, before), _overlay(f, after)),
    }
    lines = _grid_lines(fixed)
    identity_grid, _ = _grey(lines)
    warped_grid = _grey(transform.apply(lines, reference=fixed))[0]
    pictures["deformation_grid.png"] = _pair(_rgb(identity_grid), _rgb(warped_grid))
    for name, rgb in pictures.items():
        save_png(rgb, out / name, aspect=aspect, min_size=384)
        paths.append(out / name)
    return paths
