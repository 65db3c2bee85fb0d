"""Registration figures: checkerboard, colour overlay and deformation grid, before and after, on the fixed grid.

Each figure is one PNG with two panels (before: the moving image resampled onto the fixed grid with the
identity; after: warped by the registration) of the central axial slice (radiological view, see
:mod:`deepmia.display`), with orientation letters and a scale bar from the fixed image's geometry.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.display import slice_for_display, window_to_uint8
from deepmia.image import Image

__all__ = ["save_registration_figures", "checkerboard"]

_CAPTIONS = {
    "checkerboard.png": "Checkerboard of fixed and moving tiles: edges line up across tiles when aligned.",
    "overlay.png": "Fixed in green, moving in magenta: aligned structures turn grey.",
    "deformation_grid.png": "A regular grid on the fixed image mapped by the transform (after); before: identity.",
}


def _slice(image: Image) -> tuple[np.ndarray, float]:
    plane, aspect = slice_for_display(image, "axial")
    return plane[0].astype(np.float32), aspect


def _grey(image: Image) -> tuple[np.ndarray, float]:
    s, aspect = _slice(image)
    return window_to_uint8(s), aspect


def checkerboard(a: np.ndarray, b: np.ndarray, *, tiles: int = 8) -> np.ndarray:
    """Tiles of ``a`` and ``b`` alternating (``tiles`` along the longer side).

    Example:
        >>> checkerboard(np.zeros((2, 2)), np.ones((2, 2)), tiles=2).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    size = max(1, max(a.shape) // tiles)
    yy, xx = np.indices(a.shape)
    board = ((yy // size + xx // size) % 2).astype(bool)
    return np.where(board, a, b)


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
    fixed: Image, moving: Image, warped: Image, transform: Any, out_dir: str | PathLike[str]
) -> list[Path]:
    """Write ``checkerboard.png``, ``overlay.png`` and ``deformation_grid.png`` into ``out_dir``.

    Args:
        fixed: Fixed image.
        moving: Moving image (any grid).
        warped: ``moving`` warped onto the fixed grid by ``transform``.
        transform: The registration's fixed-to-moving transform
            (:class:`~deepmia.processing.spatial_transform.SpatialTransform`).
        out_dir: Folder for the PNG files.

    Returns:
        The written paths.
    """
    from deepmia.processing.spatial_transform import SpatialTransform
    from deepmia.report.figures import geometry_notes, montage, panel, plane_geometry, save_rgb

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    before_img = SpatialTransform.identity(fixed.spatial_dims).apply(moving, reference=fixed)
    f, aspect = _grey(fixed)
    lo, hi = np.percentile(_slice(warped)[0], [0.5, 99.5])
    before, after = (window_to_uint8(_slice(img)[0], (lo, hi)) for img in (before_img, warped))
    lines = _grid_lines(fixed)
    identity_grid, _ = _grey(lines)
    warped_grid = _grey(transform.apply(lines, reference=fixed))[0]
    pairs = {
        "checkerboard.png": (_rgb(checkerboard(f, before)), _rgb(checkerboard(f, after))),
        "overlay.png": (_overlay(f, before), _overlay(f, after)),
        "deformation_grid.png": (_rgb(identity_grid), _rgb(warped_grid)),
    }
    col_mm, letters = plane_geometry(fixed, "axial")
    notes = geometry_notes(fixed)
    paths = []
    for name, (left, right) in pairs.items():
        panels = [panel(p, aspect=aspect, col_mm=col_mm, letters=letters, min_size=384) for p in (left, right)]
        paths.append(save_rgb(montage(panels, titles=["before", "after"], footer=[_CAPTIONS[name], *notes]),
                           out / name))
    return paths
