"""Morphology with radii in mm, connected components and their table."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.image import Image
from deepmia.processing import morphology as mo


def test_ellipsoid_footprint_follows_spacing():
    fp = mo.ellipsoid(3.0, (1.0, 1.5, 3.0))
    assert fp.shape == (7, 5, 3)
    assert fp[3, 2, 1] and fp[0, 2, 1] and fp[3, 2, 0] and not fp[0, 0, 0]


def test_dilation_grows_by_radius_in_mm_along_every_axis():
    a = np.zeros((41, 41, 21), np.uint8)
    a[20, 20, 10] = 1
    img = Image(a[None], np.diag([0.5, 1.0, 2.0, 1.0]), kind="label")
    out = mo.dilate(img, radius=4.0).array[0]
    idx = np.nonzero(out)
    extent_mm = [(i.max() - i.min()) * s / 2 for i, s in zip(idx, (0.5, 1.0, 2.0), strict=False)]
    np.testing.assert_allclose(extent_mm, [4.0, 4.0, 4.0])


def test_open_close_erode_on_labels_keep_labels_separate(label_volume):
    for fn in (mo.dilate, mo.erode, mo.open, mo.close):
        out = fn(label_volume, radius=2.0)
        assert out.kind == "label" and out.dtype == label_volume.dtype
        assert set(np.unique(out.array)) <= {0, 1, 2}
    eroded = mo.erode(label_volume, radius=2.0).array
    assert np.all((eroded == 0) | (eroded == label_volume.array))
    assert (eroded > 0).sum() < (label_volume.array > 0).sum()
    dilated = mo.dilate(label_volume, radius=2.0).array
    assert np.all((label_volume.array == 0) | (dilated == label_volume.array))


def test_zero_radius_is_identity(label_volume, noisy_volume):
    for fn in (mo.dilate, mo.erode, mo.open, mo.close):
        np.testing.assert_array_equal(fn(label_volume, radius=0.0).array, label_volume.array)
        np.testing.assert_array_equal(fn(noisy_volume, radius=0.0).array, noisy_volume.array)


def test_grey_dilation_on_intensity(noisy_volume):
    out = mo.dilate(noisy_volume, radius=2.0)
    assert np.all(out.array >= noisy_volume.array - 1e-6)


def test_close_bridges_a_gap_and_open_removes_a_speck():
    a = np.zeros((30, 30), np.uint8)
    a[5:25, 5:14] = 1
    a[5:25, 15:25] = 1  # one-pixel gap at column 14
    a[2, 2] = 1  # speck
    img = Image(a[None], kind="label")
    closed = mo.close(img, radius=1.5).array[0]
    assert closed[10, 14] == 1
    opened = mo.open(img, radius=1.5).array[0]
    assert opened[2, 2] == 0 and opened[10, 10] == 1


def test_fill_holes_and_largest_component():
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:12, 2:12, 2:12] = 1
    a[5:8, 5:8, 5:8] = 0  # enclosed hole
    a[15:18, 15:18, 15:18] = 1  # small separate component
    img = Image(a[None], kind="label")
    filled = mo.fill_holes(img).array[0]
    assert filled[6, 6, 6] == 1
    largest = mo.largest_component(img).array[0]
    assert largest[16, 16, 16] == 0 and largest[3, 3, 3] == 1


def test_components_ids_largest_first_and_min_size():
    a = np.zeros((20, 20), np.uint8)
    a[0:2, 0:2] = 1  # 4 px
    a[10:16, 10:16] = 1  # 36 px
    img = Image(a[None], np.diag([2.0, 2.0, 1.0, 1.0]), kind="label")
    out = mo.components(img).array[0]
    assert out[12, 12] == 1 and out[0, 0] == 2
    big_only = mo.components(img, min_size=20.0).array[0]  # 4 px * 4 mm^2 = 16 < 20
    assert big_only[0, 0] == 0 and big_only[12, 12] == 1


def test_component_table_volumes_bbox_centroid_mean(label_volume, noisy_volume):
    rows = mo.component_table(label_volume, noisy_volume)
    assert [r["label"] for r in rows] == [1, 2]
    voxel = float(np.prod(label_volume.spacing))
    box = rows[1]
    assert box["voxels"] == 8 * 10 * 8
    assert box["volume_mm3"] == pytest.approx(640 * voxel)
    assert box["volume_ml"] == pytest.approx(640 * voxel / 1000)
    assert box["bbox_min"] == [28, 10, 8] and box["bbox_max"] == [35, 19, 15]
    np.testing.assert_allclose(box["centroid_voxel"], [31.5, 14.5, 11.5])
    np.testing.assert_allclose(box["centroid_mm"], label_volume.voxel_to_world([[31.5, 14.5, 11.5]])[0])
    m = label_volume.array[0] == 2
    assert box["mean_intensity"] == pytest.approx(float(noisy_volume.array[0][m].mean()), rel=1e-5)
    split = mo.component_table(label_volume, connected=True)
    assert len(split) == 2 and split[0]["voxels"] >= split[1]["voxels"]


@pytest.mark.parametrize("value", [0, 1, 3])
def test_single_label_dilation_equals_scipy_and_keeps_value(value):
    from scipy import ndimage as ndi

    a = np.zeros((1, 20, 18, 9), np.uint8)
    a[0, 6:11, 7:9, 3:6] = value
    img = Image(a, np.diag([1.0, 1.5, 3.0, 1.0]), kind="label")
    out = mo.dilate(img, radius=3.0)
    ref = ndi.binary_dilation(a[0] != 0, mo.ellipsoid(3.0, img.spacing)).astype(np.uint8) * value
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out.array[0], ref)


def _per_label_reference(labels: Image, op, radius: float) -> np.ndarray:
    """Each label on its own through SciPy with the same footprint, taking only its own voxels and background;
    a background voxel claimed twice keeps the lower label."""
    a = labels.array[0]
    fp = mo.ellipsoid(radius, labels.spacing)
    out = np.zeros_like(a)
    for v in sorted(set(np.unique(a)) - {0}):
        m = op(a == v, structure=fp) & ((a == v) | (a == 0)) & (out == 0)
        out[m] = v
    return out


@pytest.mark.parametrize("name", ["erode", "dilate"])
def test_touching_labels_are_processed_one_label_at_a_time(touching_labels, name):
    from scipy import ndimage as ndi

    op = {"erode": ndi.binary_erosion, "dilate": ndi.binary_dilation}[name]
    out = getattr(mo, name)(touching_labels, radius=2.0).array[0]
    np.testing.assert_array_equal(out, _per_label_reference(touching_labels, op, 2.0))
    grey = {"erode": ndi.grey_erosion, "dilate": ndi.grey_dilation}[name]
    substitute = grey(touching_labels.array[0], footprint=mo.ellipsoid(2.0, touching_labels.spacing))
    assert (out != substitute).sum() > 100  # the fixture tells per-label from grey-level morphology apart
    if name == "dilate":  # a dilated label never overwrites another
        a = touching_labels.array[0]
        assert np.all((a == 0) | (out == a))


def test_touching_labels_open_close_and_fill_keep_every_label(touching_labels):
    for fn in (mo.open, mo.close, mo.fill_holes):
        out = (fn(touching_labels, radius=1.0) if fn is not mo.fill_holes else fn(touching_labels)).array[0]
        assert set(np.unique(out)) == {0, 1, 2, 3}, fn.__name__
