"""Classical segmentation: thresholds, region growing, watershed, Canny edges, a Chan-Vese level set.

Thresholds are fixed, HU ranges, Otsu, multi-Otsu, Li or triangle.

Every step returns a label image (``uint8``, or ``int32`` for object ids) on the input's grid. Thresholds
that were computed are recorded in ``meta["thresholds"]`` (one list per channel).
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing._steps import as_float, preset_or_values, stack_channels, step

__all__ = [
    "HU_RANGES",
    "threshold",
    "otsu",
    "multiotsu",
    "li",
    "triangle",
    "region_grow",
    "watershed",
    "canny",
    "chan_vese",
]

#: Typical CT tissue ranges in Hounsfield units (low, high), inclusive.
HU_RANGES: dict[str, tuple[float, float]] = {
    "air": (-1100.0, -950.0),
    "lung": (-950.0, -400.0),
    "fat": (-190.0, -30.0),
    "water": (-10.0, 10.0),
    "soft_tissue": (20.0, 80.0),
    "bone": (300.0, 3000.0),
    "metal": (3000.0, 1e9),
}


def _labels_from(image: Image, fn, name: str) -> Image:
    """Apply ``fn(channel) -> (labels, thresholds)`` per channel; record thresholds in meta."""
    labels, thresholds = [], []
    for c in range(image.num_channels):
        lab, thr = fn(as_float(image.array[c]))
        labels.append(lab)
        thresholds.append([float(t) for t in np.atleast_1d(thr)])
    out = Image(stack_channels(labels), image.affine, kind="label", meta=image.meta)
    out.meta["thresholds"] = thresholds
    out.meta["segmentation"] = name
    return out


@step("threshold")
def threshold(
    image: Image,
    *,
    low: float | None = None,
    high: float | None = None,
    preset: Literal["air", "lung", "fat", "water", "soft_tissue", "bone", "metal"] | None = None,
) -> Image:
    """Voxels with ``low <= value <= high`` (either bound may be open), or inside a CT HU ``preset`` range."""
    low, high = preset_or_values("threshold", preset, HU_RANGES, (low, high), "low/high")
    if low is None and high is None:
        raise InvalidArgumentError(
            "threshold needs low and/or high, or a preset", fix=f"presets: {', '.join(HU_RANGES)}"
        )
    lo = -np.inf if low is None else low
    hi = np.inf if high is None else high
    if lo > hi:
        raise InvalidArgumentError(f"threshold: low {lo} is above high {hi}")
    return _labels_from(image, lambda a: (((a >= lo) & (a <= hi)).astype(np.uint8), [lo, hi]), "threshold")


@step("otsu")
def otsu(image: Image, *, bins: Annotated[int, Field(ge=2, le=65536)] = 256) -> Image:
    """Foreground above Otsu's threshold (scikit-image ``threshold_otsu``)."""
    from skimage.filters import threshold_otsu

    def run(a):
        t = threshold_otsu(a, nbins=bins)
        return (a > t).astype(np.uint8), t

    return _labels_from(image, run, "otsu")


@step("multiotsu")
def multiotsu(
    image: Image, *, classes: Annotated[int, Field(ge=2, le=6)] = 3, bins: Annotated[int, Field(ge=2, le=4096)] = 256
) -> Image:
    """Labels 0..classes-1 split by multi-Otsu thresholds (scikit-image ``threshold_multiotsu``)."""
    from skimage.filters import threshold_multiotsu

    def run(a):
        t = threshold_multiotsu(a, classes=classes, nbins=bins)
        return np.digitize(a, t).astype(np.uint8), t

    return _labels_from(image, run, "multiotsu")


@step("li")
def li(image: Image) -> Image:
    """Foreground above Li's minimum cross-entropy threshold (scikit-image ``threshold_li``)."""
    from skimage.filters import threshold_li

    def run(a):
        t = threshold_li(a)
        return (a > t).astype(np.uint8), t

    return _labels_from(image, run, "li")


@step("triangle")
def triangle(image: Image, *, bins: Annotated[int, Field(ge=2, le=65536)] = 256) -> Image:
    """Foreground above the triangle threshold (scikit-image ``threshold_triangle``), for skewed histograms."""
    from skimage.filters import threshold_triangle

    def run(a):
        t = threshold_triangle(a, nbins=bins)
        return (a > t).astype(np.uint8), t

    return _labels_from(image, run, "triangle")


def _check_seeds(seeds: list[list[int]], image: Image) -> list[tuple[int, ...]]:
    shape = image.spatial_shape
    out = []
    for s in seeds:
        if len(s) != image.spatial_dims or any(not 0 <= int(v) < n for v, n in zip(s, shape, strict=False)):
            raise InvalidArgumentError(f"region_grow: seed {s} is not a voxel index inside the grid {shape}")
        out.append(tuple(int(v) for v in s))
    return out


@step("region_grow")
def region_grow(
    image: Image,
    *,
    seeds: list[list[int]],
    method: Literal["connected", "confidence"] = "connected",
    lower: float | None = None,
    upper: float | None = None,
    tolerance: Annotated[float | None, Field(ge=0)] = None,
    multiplier: Annotated[float, Field(gt=0, le=20)] = 2.5,
    iterations: Annotated[int, Field(ge=0, le=50)] = 4,
    radius: Annotated[int, Field(ge=0, le=10)] = 1,
) -> Image:
    """Grow a region from seed voxels (voxel indices, e.g. ``seeds=[[60,50,40]]``) with SimpleITK (first channel).

    * ``connected``: voxels connected to a seed with value in [``lower``, ``upper``]; a missing bound is the
      seeds' value range widened by ``tolerance`` (default 3x the estimated noise sigma).
    * ``confidence``: SimpleITK's ConfidenceConnected: the range is mean +/- ``multiplier`` x std of the
      region, re-estimated over ``iterations``, starting from a ``radius``-voxel neighbourhood of the seeds.
    """
    import SimpleITK as sitk

    from deepmia.io.sitk import to_sitk

    pts = _check_seeds(seeds, image)
    if not pts:
        raise InvalidArgumentError("region_grow needs at least one seed, e.g. seeds=[[10,20,30]]")
    src = image.with_array(as_float(image.array[:1]).astype(np.float32, copy=False))
    s = to_sitk(src)
    a = src.array[0]
    if method == "connected":
        values = np.array([a[p] for p in pts])
        tol = tolerance
        if tol is None:
            from deepmia.processing.filters import noise_sigma

            tol = 3.0 * noise_sigma(a)
        lo = float(values.min() - tol) if lower is None else lower
        hi = float(values.max() + tol) if upper is None else upper
        seg = sitk.ConnectedThreshold(s, seedList=pts, lower=lo, upper=hi, replaceValue=1)
        thr = [lo, hi]
    else:
        seg = sitk.ConfidenceConnected(
            s,
            seedList=pts,
            numberOfIterations=iterations,
            multiplier=multiplier,
            initialNeighborhoodRadius=radius,
            replaceValue=1,
        )
        thr = []
    arr = sitk.GetArrayFromImage(seg).T.astype(np.uint8)  # ITK [z, y, x] -> ours [x, y, z]
    out = Image(arr[None], image.affine, kind="label", meta=image.meta)
    out.meta["thresholds"] = [thr]
    out.meta["segmentation"] = f"region_grow:{method}"
    return out


@step("watershed", accepts_labels=True)
def watershed(
    image: Image,
    *,
    h: Annotated[float, Field(gt=0)] = 2.0,
    sigma: Annotated[float, Field(ge=0)] = 0.0,
) -> Image:
    """Split touching objects: watershed of the foreground's distance map, one ``int32`` id per object.

    The foreground is a label image's non-zero voxels, or an intensity image's Otsu foreground (after Gaussian
    smoothing by ``sigma`` mm). Each distance-map maximum that rises at least ``h`` mm above the saddle
    to its neighbour seeds one object (h-maxima), so plateaus and shallow bumps do not over-split. Distances are
    in mm (spacing-aware).
    """
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed as sk_watershed

    if image.kind == "label":
        fg = np.any(image.array != 0, axis=0)
    else:
        from skimage.filters import threshold_otsu

        from deepmia.processing.filters import gaussian_array

        a = gaussian_array(image.array[0], sigma, image.spacing) if sigma > 0 else as_float(image.array[0])
        fg = a > threshold_otsu(a)
    dist = ndi.distance_transform_edt(fg, sampling=image.spacing)
    markers, _ = ndi.label(h_maxima(dist, h), ndi.generate_binary_structure(fg.ndim, fg.ndim))
    labels = sk_watershed(-dist, markers, mask=fg).astype(np.int32)
    out = Image(labels[None], image.affine, kind="label", meta=image.meta)
    out.meta["segmentation"] = "watershed"
    return out


@step("canny")
def canny(
    image: Image,
    *,
    sigma: Annotated[float, Field(gt=0)] = 1.0,
    low: Annotated[float, Field(ge=0, le=1)] = 0.7,
    high: Annotated[float, Field(ge=0, le=1)] = 0.9,
    close: Annotated[float, Field(ge=0)] = 0.0,
    fill: bool = False,
) -> Image:
    """Canny edges in 2D or 3D (SimpleITK), then optional edge closing and hole filling.

    ``sigma`` is the Gaussian scale in mm; ``low``/``high`` are hysteresis thresholds given as quantiles of the
    gradient magnitude (so they do not depend on intensity units). ``close`` is a closing radius in mm that
    bridges gaps between edge pieces; ``fill`` then fills the closed contours into regions.
    """
    import SimpleITK as sitk

    from deepmia.io.sitk import to_sitk
    from deepmia.processing.morphology import binary_op

    if low > high:
        raise InvalidArgumentError(f"canny: low quantile {low} is above high quantile {high}")
    src = image.with_array(as_float(image.array[:1]).astype(np.float32, copy=False))
    s = to_sitk(src)
    # a copy, not GetArrayViewFromImage: a view of the temporary image dangles once SimpleITK frees its buffer
    grad = sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(s, sigma=sigma))
    lo, hi = (float(v) for v in np.quantile(grad, [low, high]))
    edges = sitk.CannyEdgeDetection(s, lowerThreshold=lo, upperThreshold=hi, variance=[sigma**2] * image.spatial_dims)
    arr = (sitk.GetArrayFromImage(edges).T > 0).astype(np.uint8)
    if close > 0:
        arr = binary_op(arr.astype(bool), "close", close, image.spacing).astype(np.uint8)
    if fill:
        from scipy import ndimage as ndi

        arr = ndi.binary_fill_holes(arr).astype(np.uint8)
    out = Image(arr[None], image.affine, kind="label", meta=image.meta)
    out.meta["thresholds"] = [[lo, hi]]
    out.meta["segmentation"] = "canny"
    return out


@step("chan_vese")
def chan_vese(
    image: Image,
    *,
    iterations: Annotated[int, Field(ge=1, le=1000)] = 50,
    smoothing: Annotated[int, Field(ge=0, le=4)] = 1,
    init: Literal["otsu", "checkerboard"] = "otsu",
    lambda_in: Annotated[float, Field(gt=0)] = 1.0,
    lambda_out: Annotated[float, Field(gt=0)] = 1.0,
) -> Image:
    """Morphological Chan-Vese active contour (level set without edges; scikit-image), 2D and 3D.

    The contour starts from the Otsu foreground (or a checkerboard) and evolves ``iterations`` times;
    ``smoothing`` is the number of curvature smoothing passes per iteration. The first channel is segmented.
    """
    from skimage.filters import threshold_otsu
    from skimage.segmentation import morphological_chan_vese

    a = as_float(image.array[0])
    lo, hi = float(a.min()), float(a.max())
    unit = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    start = (unit > threshold_otsu(unit)) if init == "otsu" and hi > lo else "checkerboard"
    seg = morphological_chan_vese(
        unit, num_iter=iterations, init_level_set=start, smoothing=smoothing, lambda1=lambda_in, lambda2=lambda_out
    )
    out = Image(seg.astype(np.uint8)[None], image.affine, kind="label", meta=image.meta)
    out.meta["segmentation"] = "chan_vese"
    return out
