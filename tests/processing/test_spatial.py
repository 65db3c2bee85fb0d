"""Spatial steps: world positions survive, labels stay integral, affines are updated."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing import spatial
from tests.processing.conftest import rotated_affine


def landmark_image(spacing=(0.8, 1.1, 4.0)) -> tuple[Image, np.ndarray]:
    """Three small blobs (labels 1..3) on an oblique anisotropic grid, and their world centroids."""
    lab = np.zeros((50, 44, 16), np.int16)
    centres = [(12, 10, 4), (30, 30, 8), (40, 15, 12)]
    for v, (i, j, k) in enumerate(centres, start=1):
        lab[i - 3 : i + 4, j - 3 : j + 4, k - 1 : k + 2] = v
    img = Image(lab[None], rotated_affine(spacing), kind="label")
    world = img.voxel_to_world(np.array(centres, float))
    return img, world


def centroids_world(img: Image) -> np.ndarray:
    a = img.array[0]
    idx = ndi.center_of_mass(a > 0, a, [1, 2, 3])
    return img.voxel_to_world(np.array(idx))


@pytest.mark.parametrize("target", [1.0, (0.5, 0.5, 1.0), (2.0, 2.0, 2.0)])
def test_resample_preserves_world_positions_of_landmarks(target):
    img, world = landmark_image()
    out = spatial.resample(img, spacing=target)
    np.testing.assert_allclose(out.spacing, np.broadcast_to(target, (3,)), rtol=0.02)
    np.testing.assert_allclose(centroids_world(out), world, atol=max(np.max(target), 1.0) * 0.6)
    np.testing.assert_allclose(out.direction, img.direction, atol=1e-9)


def test_resample_intensity_landmark_positions_with_linear_interpolation():
    img, world = landmark_image(spacing=(1.0, 1.0, 1.2))
    inten = Image((img.array > 0).astype(np.float32) * 100, img.affine)
    out = spatial.resample(inten, spacing=0.6)
    lab_out = spatial.resample(img, spacing=0.6)
    a = out.array[0]
    for v, w in enumerate(world, start=1):
        region = lab_out.array[0] == v
        c = np.array(ndi.center_of_mass(a * region))
        np.testing.assert_allclose(out.voxel_to_world(c[None])[0], w, atol=0.3)


def test_labels_stay_integral_through_spatial_steps():
    img, _ = landmark_image()
    for out in (
        spatial.resample(img, spacing=1.3, interpolation="cubic"),
        spatial.resize(img, shape=(33, 20, 50)),
        spatial.reorient(img, code="LPI"),
        spatial.crop_foreground(img, margin=2.0),
        spatial.pad(img, margin=2, value=7.0),
    ):
        assert out.kind == "label" and out.dtype == img.dtype
        assert set(np.unique(out.array)) <= {0, 1, 2, 3}


def test_anisotropic_resample_interpolates_coarse_axis_separately():
    rng = np.random.default_rng(0)
    img = Image(rng.normal(size=(1, 20, 20, 6)).astype(np.float32), np.diag([1.0, 1.0, 5.0, 1.0]))
    out = spatial.resample(img, spacing=(1.0, 1.0, 2.5))  # order_z=0: nearest along z
    # each output slice equals one input slice (no mixing across thick slices)
    for k in range(out.spatial_shape[2]):
        diffs = [np.abs(out.array[0, :, :, k] - img.array[0, :, :, j]).max() for j in range(6)]
        assert min(diffs) < 1e-4
    mixed = spatial.resample(img, spacing=(1.0, 1.0, 2.5), order_z=None)
    assert not np.allclose(mixed.array, out.array)


def test_resize_keeps_field_of_view():
    img, _ = landmark_image()
    out = spatial.resize(img, shape=(25, 22, 8))
    corners_in = img.voxel_to_world(np.array([[-0.5, -0.5, -0.5], np.array(img.spatial_shape) - 0.5]))
    corners_out = out.voxel_to_world(np.array([[-0.5, -0.5, -0.5], np.array(out.spatial_shape) - 0.5]))
    np.testing.assert_allclose(corners_out, corners_in, atol=1e-6)


@pytest.mark.parametrize("code", ["LPS", "PIR", "SAL", "RAS"])
def test_reorient_keeps_world_positions(code):
    img, world = landmark_image()
    out = spatial.reorient(img, code=code)
    assert out.orientation == code
    np.testing.assert_allclose(centroids_world(out), world, atol=1e-6)


def test_reorient_2d_and_bad_codes(image_2d):
    out = spatial.reorient(image_2d, code="LP")
    assert out.orientation[:2] == "LP"
    np.testing.assert_array_equal(out.array, image_2d.array[:, ::-1, ::-1])
    with pytest.raises(InvalidArgumentError, match="axis code"):
        spatial.reorient(spatial.reorient(image_2d, code="LP"), code="XY")
    img, _ = landmark_image()
    with pytest.raises(InvalidArgumentError, match="one letter from each"):
        spatial.reorient(img, code="RLS")


def test_crop_and_pad_update_the_origin():
    img, world = landmark_image()
    cropped = spatial.crop_foreground(img)
    assert cropped.spatial_shape < img.spatial_shape
    np.testing.assert_allclose(centroids_world(cropped), world, atol=1e-6)
    padded = spatial.pad(cropped, margin=(1, 2, 3), mode="edge")
    assert padded.spatial_shape == tuple(n + 2 * m for n, m in zip(cropped.spatial_shape, (1, 2, 3), strict=False))
    np.testing.assert_allclose(centroids_world(spatial.pad(cropped, margin=(1, 2, 3))), world, atol=1e-6)
    grown = spatial.pad(img, shape=(60, 44, 21))
    assert grown.spatial_shape == (60, 44, 21)
    np.testing.assert_allclose(centroids_world(grown), world, atol=1e-6)


def test_resample_rejects_wrong_number_of_spacings():
    img, _ = landmark_image()
    with pytest.raises(InvalidArgumentError, match="1 or 3 values"):
        spatial.resample(img, spacing=(1.0, 2.0))
    with pytest.raises(InvalidArgumentError, match="positive"):
        spatial.resample(img, spacing=0)


@pytest.mark.parametrize("order,interpolation", [(0, "nearest"), (1, "linear")])
def test_resample_kernel_equals_scipy_affine_transform(noisy_volume, order, interpolation):
    out = spatial.resample(noisy_volume, spacing=(0.6, 0.9, 2.5), interpolation=interpolation, order_z=None)
    ratio = np.asarray(noisy_volume.spatial_shape) / np.asarray(out.spatial_shape)
    ref = ndi.affine_transform(
        noisy_volume.array[0],
        ratio,
        offset=0.5 * ratio - 0.5,
        output_shape=out.spatial_shape,
        order=order,
        mode="nearest",
    )
    np.testing.assert_allclose(out.array[0], ref, atol=1e-3)


@pytest.mark.parametrize("margin", [0.0, 2.5])
def test_crop_foreground_box_equals_nonzero_box(margin):
    rng = np.random.default_rng(3)
    arr = np.zeros((2, 30, 25, 12), np.float32)
    arr[0, 5:9, 3:20, 4] = 1.0  # the box spans both channels
    arr[1, 17, 22, 2:10] = rng.uniform(1, 2, 8)
    img = Image(arr, np.diag([1.0, 2.0, 3.0, 1.0]))
    out = spatial.crop_foreground(img, margin=margin)
    idx = np.nonzero(np.any(arr > 0, axis=0))
    pad = np.ceil(margin / np.array(img.spacing)).astype(int)
    lo = np.maximum(0, [i.min() for i in idx] - pad)
    hi = np.minimum(img.spatial_shape, np.array([i.max() for i in idx]) + 1 + pad)
    np.testing.assert_array_equal(out.array, arr[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    np.testing.assert_allclose(out.origin, img.voxel_to_world(lo[None])[0])
    empty = spatial.crop_foreground(img, threshold=5.0)
    assert empty.spatial_shape == img.spatial_shape and not np.shares_memory(empty.array, img.array)


def test_reorient_returns_a_copy_and_matches_nibabel_orientation():
    import nibabel.orientations as nio

    img, _ = landmark_image()
    same = spatial.reorient(img, code=img.orientation)
    np.testing.assert_array_equal(same.array, img.array)
    assert not np.shares_memory(same.array, img.array)
    straight = Image(img.array, np.diag([-0.8, 1.1, -4.0, 1.0])[:, [1, 0, 2, 3]], kind="label")
    for affine in (img.affine, straight.affine):  # oblique (nibabel's SVD path) and axis-aligned (sign read-off)
        np.testing.assert_array_equal(spatial._axis_orientation(affine), nio.io_orientation(affine))
    assert spatial.reorient(straight, code="RAS").orientation == "RAS"


@pytest.mark.parametrize("shape", [(7, 9), (25, 13, 40)])
def test_resize_linear_equals_scipy_affine_transform(shape):
    rng = np.random.default_rng(1)
    src = rng.normal(size=(1, 18, 21, 10)[: len(shape) + 1]).astype(np.float32)
    img = Image(src)
    out = spatial.resize(img, shape=shape)
    ratio = np.asarray(img.spatial_shape) / np.asarray(shape)
    ref = ndi.affine_transform(src[0], ratio, offset=0.5 * ratio - 0.5, output_shape=shape, order=1, mode="nearest")
    np.testing.assert_allclose(out.array[0], ref, atol=1e-5)
    assert out.dtype == np.float32


@pytest.mark.parametrize("value", [0.0, -3.5])
def test_constant_pad_equals_numpy_pad(value):
    rng = np.random.default_rng(2)
    img = Image(rng.normal(size=(2, 6, 5, 4)).astype(np.float32))
    out = spatial.pad(img, margin=(1, 0, 2), shape=(9, 8, 4), value=value)
    widths = [(0, 0), (1, 2), (1, 2), (2, 2)]  # margin, then the extra to reach shape split low-half first
    np.testing.assert_array_equal(out.array, np.pad(img.array, widths, constant_values=value))
    assert out.dtype == img.dtype
