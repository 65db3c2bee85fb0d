"""Denoising filters against reference kernels, and their properties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from deepmia.image import Image
from deepmia.processing import filters


def test_gaussian_equals_scipy_with_sigma_in_mm_per_axis(noisy_volume):
    out = filters.gaussian(noisy_volume, sigma=2.0)
    sig = [2.0 / s for s in noisy_volume.spacing]
    assert len(set(np.round(sig, 3))) == 3  # anisotropic: the conversion matters
    ref = ndi.gaussian_filter(noisy_volume.array[0].astype(np.float64), sig, mode="nearest")
    np.testing.assert_allclose(out.array[0], ref, rtol=1e-5, atol=1e-3)


def test_median_equals_scipy_median_filter(noisy_volume):
    for radius in (1, 2):
        out = filters.median(noisy_volume, radius=radius)
        ref = ndi.median_filter(noisy_volume.array[0], size=2 * radius + 1, mode="nearest")
        np.testing.assert_allclose(out.array[0], ref, rtol=0, atol=1e-5)


def test_mean_equals_uniform_filter(image_2d):
    out = filters.mean(image_2d, radius=2)
    for c in range(2):
        ref = ndi.uniform_filter(image_2d.array[c], size=5, mode="nearest")
        np.testing.assert_allclose(out.array[c], ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (filters.mean, {"radius": 1}),
        (filters.median, {"radius": 1}),
        (filters.gaussian, {"sigma": 1.5}),
        (filters.bilateral, {"sigma_spatial": 2.0}),
        (filters.anisotropic, {"iterations": 5}),
        (filters.nlmeans, {}),
    ],
)
def test_smoothing_lowers_variance_and_keeps_geometry(noisy_volume, fn, kwargs):
    out = fn(noisy_volume, **kwargs)
    # residual noise: std inside the uniform background region
    bg = (slice(0, 6), slice(0, 6), slice(None))
    assert out.array[0][bg].std() < 0.8 * noisy_volume.array[0][bg].std()
    assert out.same_geometry(noisy_volume, atol=1e-9)
    np.testing.assert_array_equal(out.affine, noisy_volume.affine)
    assert out.meta == noisy_volume.meta


@pytest.mark.parametrize(
    "fn,kwargs",
    [
        (filters.mean, {"radius": 0}),
        (filters.median, {"radius": 0}),
        (filters.gaussian, {"sigma": 0.0}),
        (filters.bilateral, {"sigma_spatial": 0.0}),
        (filters.anisotropic, {"iterations": 0}),
        (filters.nlmeans, {"h": 0.0}),
        (filters.unsharp, {"amount": 0.0}),
    ],
)
def test_zero_strength_is_identity(noisy_volume, fn, kwargs):
    out = fn(noisy_volume, **kwargs)
    np.testing.assert_allclose(out.array, noisy_volume.array, atol=1e-6)


def test_input_is_not_mutated(noisy_volume):
    before = noisy_volume.array.copy()
    filters.gaussian(noisy_volume, sigma=2.0)
    filters.unsharp(noisy_volume, sigma=2.0)
    np.testing.assert_array_equal(noisy_volume.array, before)


def test_channels_are_filtered_independently(image_2d):
    both = filters.gaussian(image_2d, sigma=1.0)
    one = filters.gaussian(image_2d.with_array(image_2d.array[1:]), sigma=1.0)
    np.testing.assert_allclose(both.array[1], one.array[0], atol=1e-5)


def test_unsharp_raises_edge_contrast(noisy_volume):
    smooth = filters.gaussian(noisy_volume, sigma=1.0)
    sharp = filters.unsharp(smooth, sigma=3.0, amount=1.5)
    grad = lambda a: np.abs(np.diff(a, axis=0)).mean()  # noqa: E731
    assert grad(sharp.array[0]) > grad(smooth.array[0])


def test_noise_sigma_recovers_known_noise():
    rng = np.random.default_rng(3)
    x, y, z = np.mgrid[:48, :48, :32]
    base = 80 * np.sin(x / 9.0) + 2.0 * y + 0.5 * z
    for sigma in (2.0, 10.0):
        est = filters.noise_sigma(base + rng.normal(0, sigma, base.shape))
        assert est == pytest.approx(sigma, rel=0.08)


def test_integer_input_gives_float32():
    img = Image(np.arange(2 * 10 * 10 * 6, dtype=np.int16).reshape(2, 10, 10, 6))
    out = filters.gaussian(img, sigma=1.0)
    assert out.dtype == np.float32
