"""Classical segmentation against scikit-image thresholds and known phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import filters as skf

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing import segmentation as seg


@pytest.mark.parametrize(
    "step,ref",
    [
        (seg.otsu, lambda a: [skf.threshold_otsu(a)]),
        (seg.li, lambda a: [skf.threshold_li(a)]),
        (seg.triangle, lambda a: [skf.threshold_triangle(a)]),
    ],
)
def test_thresholds_equal_scikit_image(noisy_volume, step, ref):
    out = step(noisy_volume)
    a = noisy_volume.array[0]
    t = ref(a)
    assert out.meta["thresholds"][0] == pytest.approx(t)
    np.testing.assert_array_equal(out.array[0], (a > t[0]).astype(np.uint8))
    assert out.kind == "label" and out.dtype == np.uint8
    assert out.same_geometry(noisy_volume, atol=1e-9)


def test_multiotsu_equals_scikit_image(noisy_volume):
    out = seg.multiotsu(noisy_volume, classes=3)
    a = noisy_volume.array[0]
    t = skf.threshold_multiotsu(a, classes=3)
    np.testing.assert_allclose(out.meta["thresholds"][0], t)
    np.testing.assert_array_equal(out.array[0], np.digitize(a, t))
    assert set(np.unique(out.array)) == {0, 1, 2}


def test_otsu_finds_the_phantom(noisy_volume):
    out = seg.otsu(noisy_volume)
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(24), indexing="ij")
    truth = ((x - 20) * 0.8) ** 2 + ((y - 18) * 1.1) ** 2 + ((z - 12) * 2.5) ** 2 < 12**2
    dice = 2 * (out.array[0].astype(bool) & truth).sum() / (out.array[0].sum() + truth.sum())
    assert dice > 0.95


def test_threshold_bounds_and_presets():
    arr = np.array([-1000, -500, -100, 0, 50, 500, 3500], np.float32).reshape(1, 7, 1)
    img = Image(arr)
    np.testing.assert_array_equal(seg.threshold(img, low=0, high=500).array.ravel(), [0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(seg.threshold(img, low=0).array.ravel(), [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(seg.threshold(img, preset="bone").array.ravel(), [0, 0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(seg.threshold(img, preset="lung").array.ravel(), [0, 1, 0, 0, 0, 0, 0])
    with pytest.raises(InvalidArgumentError, match="above high"):
        seg.threshold(img, low=5, high=1)
    with pytest.raises(InvalidArgumentError, match="presets"):
        seg.threshold(img)


def test_region_grow_connected_and_confidence(noisy_volume):
    seed = [[20, 18, 12]]
    ref = seg.otsu(noisy_volume).array[0].astype(bool)
    for method in ("connected", "confidence"):
        out = seg.region_grow(noisy_volume, seeds=seed, method=method)
        got = out.array[0].astype(bool)
        assert got[20, 18, 12]
        dice = 2 * (got & ref).sum() / (got.sum() + ref.sum())
        assert dice > 0.8, (method, dice)
    explicit = seg.region_grow(noisy_volume, seeds=seed, lower=90, upper=1000)
    assert explicit.meta["thresholds"] == [[90.0, 1000.0]]


def test_region_grow_rejects_seeds_outside():
    img = Image(np.zeros((1, 5, 5, 5), np.float32))
    with pytest.raises(InvalidArgumentError, match="not a voxel index"):
        seg.region_grow(img, seeds=[[9, 0, 0]])


def test_watershed_splits_two_touching_discs():
    x, y = np.mgrid[:80, :60]
    m = ((x - 25) ** 2 + (y - 30) ** 2 < 15**2) | ((x - 52) ** 2 + (y - 30) ** 2 < 15**2)
    out = seg.watershed(Image(m[None].astype(np.uint8), kind="label"))
    ids = set(np.unique(out.array)) - {0}
    assert len(ids) == 2
    assert out.array[0, 25, 30] != out.array[0, 52, 30]
    np.testing.assert_array_equal(out.array[0] > 0, m)


def test_canny_finds_the_boundary_and_closing_fills_it(noisy_volume):
    from deepmia.processing.filters import gaussian

    smooth = gaussian(noisy_volume, sigma=1.5)
    edges = seg.canny(smooth, sigma=1.0)
    a = edges.array[0].astype(bool)
    assert 0 < a.mean() < 0.3
    assert not a[20, 18, 12]  # centre of the sphere is no edge
    filled = seg.canny(smooth, sigma=1.0, close=3.0, fill=True)
    assert filled.array[0, 20, 18, 12] == 1


def test_canny_thresholds_come_from_live_gradient_memory(noisy_volume, monkeypatch):
    """The gradient's buffer must outlive the quantiles, also when other threads allocate meanwhile."""
    import SimpleITK as sitk

    from deepmia.io.sitk import to_sitk

    grad = sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(to_sitk(noisy_volume), sigma=1.0))
    quantile = np.quantile

    def busy_quantile(a, q, **kw):  # what a busy process does between two lines: allocate, reusing freed buffers
        junk = [sitk.Image(list(noisy_volume.spatial_shape), sitk.sitkFloat32) + 1e6 for _ in range(3)]
        del junk
        return quantile(a, q, **kw)

    monkeypatch.setattr(np, "quantile", busy_quantile)
    out = seg.canny(noisy_volume, sigma=1.0, low=0.6, high=0.95)
    np.testing.assert_allclose(out.meta["thresholds"][0], quantile(grad, [0.6, 0.95]), rtol=1e-6)


def test_chan_vese_segments_the_disc(image_2d):
    out = seg.chan_vese(image_2d.with_array(image_2d.array[:1]), iterations=20)
    x, y = np.meshgrid(np.arange(64), np.arange(48), indexing="ij")
    truth = ((x - 32) * 0.5) ** 2 + ((y - 24) * 0.7) ** 2 < 8**2
    got = out.array[0].astype(bool)
    if got[~truth].mean() > 0.5:  # Chan-Vese may label either phase as 1
        got = ~got
    assert 2 * (got & truth).sum() / (got.sum() + truth.sum()) > 0.9
