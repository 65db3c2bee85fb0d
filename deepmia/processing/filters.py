"""Denoising and sharpening filters: mean, median, gaussian, bilateral, anisotropic diffusion, non-local means, unsharp.

Kernels were chosen by measurement on a 122x101x112 CT (2-core CPU): SciPy for mean (7 ms), OpenCV's separable
filter for Gaussian (2.3 ms; SciPy 15 ms, SimpleITK's recursive Gaussian 34 ms), SimpleITK for median (0.28 s vs
SciPy's 0.62 s), SimpleITK for bilateral
and anisotropic diffusion, scikit-image for non-local means. Boundaries replicate the edge voxel ("nearest").
Integer inputs come back as float32; float inputs keep their dtype.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from deepmia.image import Image
from deepmia.io.sitk import from_sitk, to_sitk
from deepmia.processing._steps import as_float, map_channels, mm_to_voxels, step

__all__ = [
    "mean",
    "median",
    "gaussian",
    "bilateral",
    "anisotropic",
    "nlmeans",
    "unsharp",
    "gaussian_array",
    "noise_sigma",
]


def noise_sigma(array: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Estimate the standard deviation of additive white noise (Immerkaer's method, generalised to nD).

    The array is filtered with the separable second-difference kernel ``[1, -2, 1]`` along every axis, which
    cancels locally linear structure; for white noise of std sigma the residual has std ``sigma * 6^(d/2)``.
    The robust estimator ``median|r| / 0.6745`` (rather than Immerkaer's mean) is used over ``mask`` (or all
    interior voxels), so edges, which give large residuals on few voxels, barely bias it.
    Immerkaer, "Fast noise variance estimation", CVIU 1996.
    """
    from scipy import ndimage as ndi

    r = as_float(array).astype(np.float64)
    for axis in range(r.ndim):
        if r.shape[axis] >= 3:
            r = ndi.correlate1d(r, [1.0, -2.0, 1.0], axis=axis, mode="nearest")
    interior = tuple(slice(1, -1) if n >= 3 else slice(None) for n in r.shape)
    values = r[interior] if mask is None else r[interior][np.asarray(mask, bool)[interior]]
    if values.size == 0:
        return 0.0
    used = sum(1 for n in r.shape if n >= 3)
    # median absolute residual / 0.6745: robust to the few voxels on edges (Immerkaer used the mean)
    return float(np.median(np.abs(values)) / 0.6744897501960817 / 6 ** (used / 2))


def _sitk_per_channel(image: Image, fn) -> Image:
    """Run a SimpleITK filter ``fn(sitk_image) -> sitk_image`` on each channel (float32 in, geometry kept)."""
    import SimpleITK as sitk

    src = image.with_array(as_float(image.array).astype(np.float32, copy=False))
    chans = []
    for c in range(image.num_channels):
        out = fn(sitk.Cast(to_sitk(src, channel=c), sitk.sitkFloat32))
        chans.append(from_sitk(out).array[0])
    return image.with_array(np.stack(chans))


@step("mean")
def mean(image: Image, *, radius: Annotated[int, Field(ge=0, le=50)] = 1) -> Image:
    """Box mean over a (2r+1)^d neighbourhood; ``radius`` in voxels, 0 is the identity."""
    from scipy import ndimage as ndi

    if radius == 0:
        return image.with_array(image.array.copy())
    return map_channels(image, lambda a: ndi.uniform_filter(as_float(a), size=2 * radius + 1, mode="nearest"))


@step("median")
def median(image: Image, *, radius: Annotated[int, Field(ge=0, le=20)] = 1) -> Image:
    """Median over a (2r+1)^d box; ``radius`` in voxels (SimpleITK kernel, edges replicated). 0 is the identity."""
    import SimpleITK as sitk

    if radius == 0:
        return image.with_array(image.array.copy())
    return _sitk_per_channel(image, lambda s: sitk.Median(s, [radius] * image.spatial_dims))


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """SciPy's 1D Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, weights summing to 1 (``[1]`` if 0)."""
    radius = int(truncate * sigma + 0.5) if sigma > 0 else 0
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 / max(sigma, 1e-300) ** 2 * x * x) if radius else np.ones(1)
    return k / k.sum()


def gaussian_array(array: np.ndarray, sigma_mm: float, spacing, *, truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing of one 2D or 3D array with ``sigma_mm`` converted to voxels per axis, edges replicated.

    The kernel is SciPy's ``gaussian_filter`` kernel (same radius and weights, ``mode="nearest"``), run as
    separable passes of OpenCV's ``sepFilter2D`` (``BORDER_REPLICATE``): the in-plane pair on each slice, then
    the first axis on the volume seen as one 2D image. 2.3 ms instead of SciPy's 15 ms on the example CT
    (float32, 9-tap kernels), equal to SciPy within float32 rounding (relative 3e-7). The result is a new array.
    """
    import cv2

    a = np.ascontiguousarray(as_float(array))
    ks = [_gaussian_kernel(s, truncate) for s in mm_to_voxels(sigma_mm, spacing)]
    depth = cv2.CV_32F if a.dtype == np.float32 else cv2.CV_64F
    border = cv2.BORDER_REPLICATE
    if a.ndim == 2:
        return cv2.sepFilter2D(a, depth, ks[1], ks[0], borderType=border)
    out = np.empty_like(a)
    for i in range(a.shape[0]):  # axes 1 and 2 of each slice (OpenCV: kernelX runs along the last axis)
        cv2.sepFilter2D(a[i], depth, ks[2], ks[1], dst=out[i], borderType=border)
    if ks[0].size == 1:
        return out
    flat = cv2.sepFilter2D(out.reshape(a.shape[0], -1), depth, np.ones(1), ks[0], borderType=border)
    return flat.reshape(a.shape)


@step("gaussian")
def gaussian(
    image: Image,
    *,
    sigma: Annotated[float, Field(ge=0, le=1000)] = 1.0,
    truncate: Annotated[float, Field(gt=0, le=20)] = 4.0,
) -> Image:
    """Gaussian smoothing; ``sigma`` in mm, divided by each axis's spacing (anisotropic voxels). 0 is the identity."""
    if sigma == 0:
        return image.with_array(image.array.copy())
    return map_channels(image, lambda a: gaussian_array(a, sigma, image.spacing, truncate=truncate))


@step("bilateral")
def bilateral(
    image: Image,
    *,
    sigma_spatial: Annotated[float, Field(ge=0, le=1000)] = 2.0,
    sigma_range: Annotated[float | None, Field(gt=0)] = None,
) -> Image:
    """Edge-preserving bilateral filter; ``sigma_spatial`` in mm, ``sigma_range`` in intensity units.

    ``sigma_range`` defaults to the noise sigma estimated from the image (median absolute deviation of the
    wavelet detail band). ``sigma_spatial=0`` is the identity.
    """
    import SimpleITK as sitk

    if sigma_spatial == 0:
        return image.with_array(image.array.copy())
    if sigma_range is None:
        sigma_range = max(noise_sigma(image.array[0]) * 2.0, 1e-6)
    return _sitk_per_channel(image, lambda s: sitk.Bilateral(s, float(sigma_spatial), float(sigma_range)))


@step("anisotropic")
def anisotropic(
    image: Image,
    *,
    method: Literal["curvature", "gradient"] = "curvature",
    iterations: Annotated[int, Field(ge=0, le=200)] = 5,
    conductance: Annotated[float, Field(gt=0, le=100)] = 1.0,
    time_step: Annotated[float | None, Field(gt=0)] = None,
) -> Image:
    """Perona-Malik style diffusion that smooths within regions and keeps edges (SimpleITK).

    ``method`` is ``curvature`` (modified curvature diffusion, fewer artefacts) or ``gradient`` (classic
    Perona-Malik). Diffusion runs in voxel units (as ITK's default); ``time_step`` defaults to 0.95 x the stable
    limit ``1 / 2^(d+1)``. 0 iterations is the identity.
    """
    import SimpleITK as sitk

    if iterations == 0:
        return image.with_array(image.array.copy())
    dt = time_step if time_step is not None else 0.95 / 2 ** (image.spatial_dims + 1)
    fn = sitk.CurvatureAnisotropicDiffusion if method == "curvature" else sitk.GradientAnisotropicDiffusion
    return _sitk_per_channel(
        image, lambda s: fn(s, timeStep=dt, conductanceParameter=conductance, numberOfIterations=iterations)
    )


@step("nlmeans")
def nlmeans(
    image: Image,
    *,
    h: Annotated[float | None, Field(ge=0)] = None,
    patch_size: Annotated[int, Field(ge=1, le=15)] = 3,
    patch_distance: Annotated[int, Field(ge=1, le=20)] = 3,
) -> Image:
    """Non-local means (scikit-image, fast mode).

    ``h`` defaults to 0.8 x the estimated noise sigma; ``h=0`` is the identity. Patch sizes are in voxels.
    """
    from skimage.restoration import denoise_nl_means

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        sigma = noise_sigma(a)
        strength = 0.8 * sigma if h is None else h
        if strength == 0:
            return a.copy()
        return denoise_nl_means(
            a, h=strength, sigma=sigma, patch_size=patch_size, patch_distance=patch_distance, fast_mode=True
        ).astype(a.dtype, copy=False)

    return map_channels(image, run)


@step("unsharp")
def unsharp(
    image: Image,
    *,
    sigma: Annotated[float, Field(gt=0, le=1000)] = 2.0,
    amount: Annotated[float, Field(ge=0, le=20)] = 1.0,
) -> Image:
    """Unsharp masking: ``x + amount * (x - gaussian(x, sigma))``; ``sigma`` in mm. ``amount=0`` is the identity."""
    if amount == 0:
        return image.with_array(image.array.copy())

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        return a + np.asarray(amount, a.dtype) * (a - gaussian_array(a, sigma, image.spacing))

    return map_channels(image, run)
