"""Turning images into pictures a person can read: canonical slices, windowing, label overlays, PNG files.

Slices follow the radiological convention: axial and coronal views show the patient's right on the viewer's
left, anterior (axial) or superior (coronal, sagittal) at the top, and the sagittal view shows anterior on the
left. Pixels are stretched by the voxel spacing so anisotropic volumes keep their true proportions.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import numpy as np

from deepmia._validate import look_up_option
from deepmia.image import Image

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")

# Colours for label values 1..N (value 0 stays transparent); repeats past the end.
LABEL_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)


def to_ras_axes(image: Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A volume's array ``(C, X, Y, Z)`` permuted and flipped to the closest RAS axes, and its spacing in that order.

    Slice indices of :func:`slice_for_display` count along these axes (x: R, y: A, z: S).
    """
    import nibabel.orientations as nio

    ornt = nio.io_orientation(image.affine)
    arr = image.array
    out = np.stack([nio.apply_orientation(arr[c], ornt) for c in range(arr.shape[0])])
    spacing = np.zeros(3)
    spacing[ornt[:, 0].astype(int)] = np.linalg.norm(image.affine[:3, :3], axis=0)
    return out, (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def slice_for_display(image: Image, plane: Plane = "axial", index: int | None = None) -> tuple[np.ndarray, float]:
    """One slice of a volume (or the whole 2D image) as ``(C, rows, cols)`` for display, with the pixel aspect.

    Args:
        image: A 2D image or a 3D volume.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"`` (ignored for 2D images).
        index: Slice index along the plane's normal in RAS order; the middle slice by default.

    Returns:
        The slice as ``(C, rows, cols)`` and the aspect ratio (row spacing / column spacing).
    """
    if image.spatial_dims == 2:
        sx, sy = image.spacing
        return np.swapaxes(image.array, 1, 2), sy / sx  # rows = y, cols = x (as in a PNG)
    plane = look_up_option(plane, PLANES, what="plane")  # type: ignore[assignment]
    arr, (sx, sy, sz) = to_ras_axes(image)
    axis = {"sagittal": 1, "coronal": 2, "axial": 3}[plane]
    n = arr.shape[axis]
    i = n // 2 if index is None else int(np.clip(index, 0, n - 1))
    sl = np.take(arr, i, axis=axis)  # (C, a, b)
    if plane == "axial":  # (C, x, y): rows = -y (anterior up), cols = -x (patient right on the left)
        return sl.transpose(0, 2, 1)[:, ::-1, ::-1], sy / sx
    if plane == "coronal":  # (C, x, z): rows = -z (superior up), cols = -x
        return sl.transpose(0, 2, 1)[:, ::-1, ::-1], sz / sx
    return sl.transpose(0, 2, 1)[:, ::-1, ::-1], sz / sy  # sagittal (C, y, z): rows = -z, cols = -y (anterior left)


def window_to_uint8(values: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map values to 0..255 with a (low, high) window; default: the 0.5th to 99.5th percentile."""
    v = np.asarray(values, dtype=np.float32)
    if window is None:
        finite = v[np.isfinite(v)]
        lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
    else:
        lo, hi = window
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def to_rgb(slice_chw: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """A ``(C, rows, cols)`` slice as an ``(rows, cols, 3)`` uint8 picture (1 channel: grey; 3 or 4: colour)."""
    if slice_chw.shape[0] in (3, 4):
        rgb = slice_chw[:3]
        u8 = rgb.astype(np.uint8) if rgb.dtype == np.uint8 else window_to_uint8(rgb, window)
        return np.ascontiguousarray(np.moveaxis(u8, 0, -1))
    grey = window_to_uint8(slice_chw[0], window)
    return np.repeat(grey[..., None], 3, axis=-1)


def overlay_labels(rgb: np.ndarray, labels: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a label slice ``(rows, cols)`` onto an RGB picture; value 0 is left transparent."""
    out = rgb.astype(np.float32)
    lab = np.asarray(labels)
    mask = lab > 0
    if mask.any():
        colours = LABEL_COLOURS[(lab[mask].astype(np.int64) - 1) % len(LABEL_COLOURS)]
        out[mask] = (1 - alpha) * out[mask] + alpha * colours
    return out.astype(np.uint8)


def blend_heatmap(rgb: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] map ``(rows, cols)`` onto an RGB picture with the 'jet' colour map (weighted by the map)."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    w = alpha * np.clip(heat, 0, 1)[..., None] ** 0.5
    return (rgb.astype(np.float32) * (1 - w) + colours * w).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | PathLike[str], *, aspect: float = 1.0, min_size: int = 256) -> None:
    """Write an RGB picture, stretched so rows/cols follow ``aspect`` and upscaled to at least ``min_size``."""
    from PIL import Image as PILImage

    h, w = rgb.shape[:2]
    h_true = h * aspect
    scale = max(1.0, min_size / max(h_true, w))
    size = (max(1, round(w * scale)), max(1, round(h_true * scale)))
    PILImage.fromarray(rgb).resize(size, PILImage.Resampling.NEAREST).save(path)
