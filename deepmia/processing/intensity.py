"""Contrast and intensity steps: window, gamma, histeq, clahe, normalize.

Outputs are float32 (float64 stays float64). Which steps rescale, and to what range, is stated in each
docstring: nothing is rescaled silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing._steps import as_float, map_channels, preset_or_values, read_mask, step

__all__ = ["CT_WINDOWS", "window", "gamma", "histeq", "clahe", "normalize"]

#: Standard CT display windows as (centre, width) in Hounsfield units (radiology teaching references).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
}

MaskLike = Image | str | Path | None


@step("window")
def window(
    image: Image,
    *,
    preset: Literal["brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"] | None = None,
    center: float | None = None,
    width: Annotated[float | None, Field(gt=0)] = None,
    scale: bool = True,
) -> Image:
    """Intensity window: clip to ``[center - width/2, center + width/2]``; with ``scale`` map that range to [0, 1].

    Give either a CT ``preset`` (see :data:`CT_WINDOWS`) or both ``center`` and ``width``. With ``scale`` the
    kernel is OpenCV's: one ``addWeighted`` pass for ``(x - low) / width`` and two in-place ``threshold`` passes
    that clip to [0, 1] (0.48 ms on the example CT against 0.60 ms for NumPy's clip, subtract and multiply, and
    0.96 ms with a divide); NaN voxels come out as 0, the bottom of the window.
    """
    center, width = preset_or_values("window", preset, CT_WINDOWS, (center, width), "center/width")
    if center is None or width is None:
        raise InvalidArgumentError(
            "window needs center and width, or a preset", fix=f"presets: {', '.join(sorted(CT_WINDOWS))}"
        )
    low, high = center - width / 2, center + width / 2

    if not scale:
        return map_channels(image, lambda a: np.clip(as_float(a), low, high))
    import cv2

    gain = 1.0 / (high - low)

    def run(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(as_float(a))
        flat = a.reshape(a.shape[0], -1)  # OpenCV takes 2D arrays
        out = cv2.addWeighted(flat, gain, flat, 0.0, -low * gain)
        cv2.threshold(out, 1.0, 0.0, cv2.THRESH_TRUNC, dst=out)  # min(x, 1)
        cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)  # x if x > 0 else 0
        return out.reshape(a.shape)

    return map_channels(image, run)


def _range(a: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    values = a[mask] if mask is not None else a
    return float(values.min()), float(values.max())


@step("gamma")
def gamma(image: Image, *, gamma: Annotated[float, Field(gt=0, le=20)] = 1.0) -> Image:
    """Power-law contrast: map each channel's [min, max] to [0, 1], raise to ``gamma``, map back. 1 is the identity."""

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        lo, hi = _range(a)
        if hi == lo or gamma == 1:
            return a.copy()
        return (((a - lo) / (hi - lo)) ** gamma * (hi - lo) + lo).astype(a.dtype, copy=False)

    return map_channels(image, run)


@step("histeq")
def histeq(image: Image, *, bins: Annotated[int, Field(ge=2, le=65536)] = 256, mask: MaskLike = None) -> Image:
    """Global histogram equalisation (scikit-image); output in [0, 1]. With ``mask``, the histogram is the mask's."""
    from skimage.exposure import equalize_hist

    m = read_mask(mask, image)
    return map_channels(image, lambda a: equalize_hist(as_float(a), nbins=bins, mask=m).astype(np.float32))


@step("clahe")
def clahe(
    image: Image,
    *,
    clip: Annotated[float, Field(gt=0, le=1)] = 0.01,
    kernel_mm: Annotated[float | None, Field(gt=0)] = None,
    bins: Annotated[int, Field(ge=2, le=65536)] = 256,
) -> Image:
    """Contrast-limited adaptive histogram equalisation in 2D or 3D (scikit-image); output in [0, 1].

    Each channel is first mapped from its [min, max] to [0, 1]. ``kernel_mm`` is the context region size in mm
    (default: 1/8 of the field of view per axis), converted to voxels per axis. ``clip`` is the clip limit.
    """
    from skimage.exposure import equalize_adapthist

    kernel = None
    if kernel_mm is not None:
        kernel = [max(2, int(round(kernel_mm / s))) for s in image.spacing]

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        lo, hi = _range(a)
        unit = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return equalize_adapthist(unit, kernel_size=kernel, clip_limit=clip, nbins=bins).astype(np.float32)

    return map_channels(image, run)


def _zscore(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``(a - mean) / std`` with both measured inside ``mask`` (all voxels when None); std 0 only subtracts.

    OpenCV: ``meanStdDev`` gets both moments in one pass with double accumulation and ``addWeighted`` applies
    them in one more (1.1 ms on the example CT against 1.7 ms for NumPy's mean, std, subtract and divide).
    """
    import cv2

    a = np.ascontiguousarray(a)
    flat = a.reshape(a.shape[0], -1)  # OpenCV takes 2D arrays
    m = None if mask is None else np.ascontiguousarray(mask, dtype=np.uint8).reshape(flat.shape)
    mean, std = cv2.meanStdDev(flat, mask=m)
    mu, sd = float(mean[0, 0]), float(std[0, 0])
    scale = 1.0 / sd if sd > 0 else 1.0
    return cv2.addWeighted(flat, scale, flat, 0.0, -mu * scale).reshape(a.shape)


@step("normalize")
def normalize(
    image: Image,
    *,
    method: Literal["zscore", "percentile", "minmax", "hu"] = "zscore",
    mask: MaskLike = None,
    low: Annotated[float, Field(ge=0, le=100)] = 0.5,
    high: Annotated[float, Field(ge=0, le=100)] = 99.5,
    hu_min: float = -1000.0,
    hu_max: float = 1000.0,
) -> Image:
    """Intensity normalisation per channel.

    * ``zscore``: subtract the mean and divide by the standard deviation, both measured inside ``mask`` (all
      voxels when none) - the nnU-Net MRI scheme (OpenCV kernels, see :func:`_zscore`).
    * ``percentile``: clip to the ``low``/``high`` percentiles (inside ``mask``) and map them to [0, 1].
    * ``minmax``: map [min, max] to [0, 1].
    * ``hu``: clip CT values to [``hu_min``, ``hu_max``] Hounsfield units and map that range to [0, 1].
    """
    if low >= high:
        raise InvalidArgumentError(f"normalize: low percentile {low} must be below high percentile {high}")
    if hu_min >= hu_max:
        raise InvalidArgumentError(f"normalize: hu_min {hu_min} must be below hu_max {hu_max}")
    m = read_mask(mask, image)
    if m is not None and not m.any():
        raise InvalidArgumentError("normalize: the mask is empty")

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        if method == "zscore":
            return _zscore(a, m)
        values = a[m] if m is not None else a
        if method == "hu":
            lo, hi = hu_min, hu_max
        elif method == "percentile":
            lo, hi = (float(v) for v in np.percentile(values, [low, high]))
        else:
            lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            return np.zeros_like(a)
        out = np.clip(a, lo, hi)
        out -= lo
        out /= hi - lo
        return out

    return map_channels(image, run)
