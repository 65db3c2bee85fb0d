"""Contrast and intensity steps."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import exposure

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing import intensity


def ct_like() -> Image:
    rng = np.random.default_rng(2)
    arr = rng.uniform(-1024, 2000, size=(1, 30, 30, 12)).astype(np.float32)
    return Image(arr, np.diag([0.7, 0.7, 3.0, 1.0]), meta={"modality": "CT"})


@pytest.mark.parametrize("preset", sorted(intensity.CT_WINDOWS))
def test_window_presets_clip_to_centre_and_width(preset):
    img = ct_like()
    c, w = intensity.CT_WINDOWS[preset]
    out = intensity.window(img, preset=preset, scale=False)
    assert out.array.min() >= c - w / 2 - 1e-3 and out.array.max() <= c + w / 2 + 1e-3
    inside = (img.array > c - w / 2) & (img.array < c + w / 2)
    np.testing.assert_allclose(out.array[inside], img.array[inside])
    scaled = intensity.window(img, preset=preset)
    np.testing.assert_allclose(scaled.array, (out.array - (c - w / 2)) / w, atol=1e-6)


def test_window_needs_centre_and_width_or_preset():
    with pytest.raises(InvalidArgumentError, match="presets"):
        intensity.window(ct_like(), center=40.0)
    with pytest.raises(InvalidArgumentError, match="not both"):
        intensity.window(ct_like(), preset="brain", center=40.0, width=80.0)


def test_gamma_one_is_identity_and_keeps_range():
    img = ct_like()
    np.testing.assert_allclose(intensity.gamma(img, gamma=1.0).array, img.array)
    out = intensity.gamma(img, gamma=0.5)
    assert out.array.min() == pytest.approx(img.array.min()) and out.array.max() == pytest.approx(img.array.max())
    assert out.array.mean() > img.array.mean()  # gamma < 1 brightens


def test_histeq_and_clahe_match_scikit_image(noisy_volume):
    a = noisy_volume.array[0]
    np.testing.assert_allclose(intensity.histeq(noisy_volume).array[0], exposure.equalize_hist(a), atol=1e-6)
    out = intensity.clahe(noisy_volume, clip=0.02)
    unit = (a - a.min()) / (a.max() - a.min())
    np.testing.assert_allclose(out.array[0], exposure.equalize_adapthist(unit, clip_limit=0.02), atol=1e-5)
    assert 0 <= out.array.min() and out.array.max() <= 1


def test_clahe_2d_with_kernel_in_mm(image_2d):
    out = intensity.clahe(image_2d, kernel_mm=8.0)
    assert out.shape == image_2d.shape and 0 <= out.array.min() and out.array.max() <= 1


def test_normalize_zscore_with_mask(noisy_volume, label_volume):
    mask = Image((label_volume.array == 1).astype(np.uint8), label_volume.affine, kind="label")
    out = intensity.normalize(noisy_volume, method="zscore", mask=mask)
    inside = out.array[0][mask.array[0] == 1]
    assert inside.mean() == pytest.approx(0, abs=1e-4)
    assert inside.std() == pytest.approx(1, abs=1e-4)
    whole = intensity.normalize(noisy_volume)
    assert whole.array.mean() == pytest.approx(0, abs=1e-4)


def test_normalize_percentile_minmax_hu():
    img = ct_like()
    p = intensity.normalize(img, method="percentile", low=5, high=95).array
    lo, hi = np.percentile(img.array, [5, 95])
    np.testing.assert_allclose(p, (np.clip(img.array, lo, hi) - lo) / (hi - lo), atol=1e-5)
    m = intensity.normalize(img, method="minmax").array
    assert m.min() == 0 and m.max() == pytest.approx(1)
    h = intensity.normalize(img, method="hu", hu_min=-100, hu_max=300).array
    np.testing.assert_allclose(h, (np.clip(img.array, -100, 300) + 100) / 400, atol=1e-6)


def test_normalize_refuses_bad_arguments(noisy_volume):
    with pytest.raises(InvalidArgumentError, match="below high"):
        intensity.normalize(noisy_volume, method="percentile", low=90, high=10)
    empty = Image(np.zeros((1,) + noisy_volume.spatial_shape, np.uint8), noisy_volume.affine, kind="label")
    with pytest.raises(InvalidArgumentError, match="empty"):
        intensity.normalize(noisy_volume, mask=empty)
    other_grid = Image(np.ones((1, 5, 5, 5), np.uint8), kind="label")
    with pytest.raises(InvalidArgumentError, match="differs"):
        intensity.normalize(noisy_volume, mask=other_grid)


def test_window_scaled_equals_numpy_clip_and_stays_in_unit_range():
    img = ct_like()
    for center, width in ((40.0, 400.0), (-600.0, 1500.0), (33.3, 7.0)):
        out = intensity.window(img, center=center, width=width).array
        lo = center - width / 2
        ref = (np.clip(img.array.astype(np.float64), lo, lo + width) - lo) / width
        np.testing.assert_allclose(out, ref, atol=1e-6)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert out.dtype == np.float32
