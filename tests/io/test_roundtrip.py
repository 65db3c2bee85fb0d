"""Round trips between every 3D format: voxels, dtype, kind and affine (within 1e-4 mm) survive."""

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepmia.image import Image
from deepmia.io import read_image, write_image

VOLUME_SUFFIXES = [".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".tif"]
ATOL_MM = 1e-4


@st.composite
def affines(draw):
    """Random rotation x diagonal of +-1 flips x spacing, plus an origin: oblique and flipped geometries."""
    seed = draw(st.integers(0, 2**32 - 1))
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    if np.linalg.det(rotation) < 0:
        rotation[:, 0] *= -1
    flips = np.diag(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
    spacing = np.diag(draw(st.lists(st.floats(0.2, 5.0), min_size=3, max_size=3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flips @ spacing
    affine[:3, 3] = draw(st.lists(st.floats(-300.0, 300.0), min_size=3, max_size=3))
    return affine


@st.composite
def images(draw):
    dtype = draw(st.sampled_from([np.int16, np.uint8, np.float32]))
    channels = draw(st.sampled_from([1, 3]))
    shape = (channels, *draw(st.lists(st.integers(2, 6), min_size=3, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype == np.float32:
        arr = rng.normal(scale=100.0, size=shape).astype(np.float32)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    kind = draw(st.sampled_from(["intensity", "label"])) if dtype != np.float32 else "intensity"
    return Image(arr, draw(affines()), kind=kind)


def _assert_same(back: Image, img: Image) -> None:
    assert back.dtype == img.dtype and back.kind == img.kind
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine, atol=ATOL_MM)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(img=images())
def test_chain_nifti_nrrd_metaimage_npz_tiff(tmp_path, img):
    current = img
    for i, suffix in enumerate([".nii.gz", ".nrrd", ".mha", ".npz", ".tif", ".nii.gz"]):
        write_image(current, tmp_path / f"step{i}{suffix}")
        current = read_image(tmp_path / f"step{i}{suffix}")
        _assert_same(current, img)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(img=images(), suffix=st.sampled_from([".nhdr", ".mhd"]))
def test_detached_headers(tmp_path, img, suffix):
    write_image(img, tmp_path / f"d{suffix}")
    _assert_same(read_image(tmp_path / f"d{suffix}"), img)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(affine=affines())
def test_world_position_of_a_voxel_survives_nrrd_and_mha(tmp_path, affine):
    """The same voxel lands at the same RAS+ point however the file stores its world frame."""
    arr = np.zeros((1, 4, 5, 6), np.uint8)
    arr[0, 3, 1, 4] = 1
    img = Image(arr, affine)
    expected = img.voxel_to_world([[3, 1, 4]])
    for suffix in (".nrrd", ".mha"):
        write_image(img, tmp_path / f"w{suffix}")
        back = read_image(tmp_path / f"w{suffix}")
        voxel = np.argwhere(back.array[0])[0]
        np.testing.assert_allclose(back.voxel_to_world([voxel]), expected, atol=ATOL_MM)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["example_ct.nii.gz", "example_mr_sm.nii.gz"])
def test_real_volumes_through_every_3d_format(tmp_path, shared_data, name):
    path = shared_data / "ct_mr_examples" / name
    original = read_image(path)
    np.testing.assert_allclose(original.affine, nib.load(path).affine)
    for suffix in VOLUME_SUFFIXES:
        write_image(original, tmp_path / f"x{suffix}")
        back = read_image(tmp_path / f"x{suffix}")
        assert back.orientation == original.orientation, suffix
        _assert_same(back, original)
        write_image(back, tmp_path / f"again{suffix}.nii.gz")
        _assert_same(read_image(tmp_path / f"again{suffix}.nii.gz"), original)


def test_mr_example_is_lps(shared_data):
    assert read_image(shared_data / "ct_mr_examples" / "example_mr_sm.nii.gz").orientation == "LPS"
