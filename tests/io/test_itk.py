import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from deepmia.errors import CorruptFileError, GeometryError
from deepmia.image import Image
from deepmia.io import read_image, write_image

# A geometry in RAS+ and the same one written in LPS: voxel axis i points to R, j to A, k to S.
RAS_DIRECTIONS = np.diag([1.5, 2.0, 3.0])
RAS_ORIGIN = np.array([10.0, -20.0, 30.0])
LPS_FLIP = np.diag([-1.0, -1.0, 1.0])


def _data(dtype=np.int16, shape=(4, 5, 6)):
    return (np.arange(np.prod(shape)) % 120 - 7).astype(dtype).reshape(shape)


def test_nrrd_ras_and_lps_spaces_give_the_same_world_geometry(tmp_path):
    data = _data()
    # pynrrd writes "space directions" one row per voxel axis.
    nrrd.write(str(tmp_path / "ras.nrrd"), data, {"space": "right-anterior-superior",
                                                   "space directions": RAS_DIRECTIONS, "space origin": RAS_ORIGIN})
    nrrd.write(str(tmp_path / "lps.nrrd"), data, {"space": "left-posterior-superior",
                                                   "space directions": RAS_DIRECTIONS @ LPS_FLIP,
                                                   "space origin": LPS_FLIP @ RAS_ORIGIN})
    ras, lps = read_image(tmp_path / "ras.nrrd"), read_image(tmp_path / "lps.nrrd")
    expected = np.eye(4)
    expected[:3, :3] = RAS_DIRECTIONS.T
    expected[:3, 3] = RAS_ORIGIN
    np.testing.assert_allclose(ras.affine, expected)
    np.testing.assert_allclose(lps.affine, expected)
    assert ras.orientation == "RAS"
    np.testing.assert_array_equal(ras.array[0], data)
    assert ras.dtype == np.int16


@pytest.mark.parametrize("component", ["vector", "RGB-color"])
def test_nrrd_vector_axis_becomes_channels(tmp_path, component):
    data = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype(np.float32)
    nrrd.write(str(tmp_path / "v.nrrd"), data, {"kinds": [component, "domain", "domain", "domain"]})
    img = read_image(tmp_path / "v.nrrd")
    assert img.shape == (3, 4, 5, 6) and img.dtype == np.float32
    np.testing.assert_array_equal(img.array, data)


def test_4d_metaimage_fourth_axis_becomes_channels(tmp_path):
    data = _data(np.float32, (2, 3, 4, 5))  # ITK order (t, z, y, x)
    img4 = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in data])
    img4.SetSpacing((0.5, 0.6, 0.7, 2.0))
    sitk.WriteImage(img4, str(tmp_path / "four.mha"))
    img = read_image(tmp_path / "four.mha")
    assert img.shape == (2, 5, 4, 3)
    np.testing.assert_allclose(img.spacing, (0.5, 0.6, 0.7))
    np.testing.assert_array_equal(img.array[1], data[1].transpose(2, 1, 0))


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int64])
def test_write_read_keeps_dtype_voxels_affine_kind(tmp_path, suffix, dtype):
    affine = np.array([[0.0, 0.0, -2.0, 5.0], [1.2, 0.0, 0.0, -3.0], [0.0, 0.8, 0.0, 7.0], [0, 0, 0, 1]])
    kind = "label" if np.issubdtype(dtype, np.integer) else "intensity"
    img = Image(_data(dtype)[None], affine, kind=kind)
    write_image(img, tmp_path / f"x{suffix}")
    back = read_image(tmp_path / f"x{suffix}")
    assert back.dtype == dtype and back.kind == kind
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)


def test_matches_simpleitk_reading_2d_metaimage(shared_data):
    path = shared_data / "registration" / "ct2d_head" / "CT_2D_head_fixed.mha"
    ref = sitk.ReadImage(str(path))
    img = read_image(path)
    assert img.spatial_dims == 2 and img.dtype == np.int16
    np.testing.assert_array_equal(img.array[0], sitk.GetArrayFromImage(ref).T)
    np.testing.assert_allclose(img.spacing, ref.GetSpacing())


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_truncated_file_is_corrupt_and_named(tmp_path, suffix):
    write_image(Image(_data(np.float32, (30, 30, 30))[None]), tmp_path / f"full{suffix}")
    blob = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=rf"cut\{suffix}: not a readable"):
        read_image(tmp_path / f"cut{suffix}")


def test_text_file_named_nrrd_is_corrupt(tmp_path):
    (tmp_path / "notes.nrrd").write_text("just some text\n")
    with pytest.raises(CorruptFileError, match=r"notes\.nrrd"):
        read_image(tmp_path / "notes.nrrd")


def test_nrrd_with_singular_directions_is_a_geometry_error(tmp_path):
    directions = RAS_DIRECTIONS.copy()
    directions[1] = directions[0]  # two voxel axes pointing the same way
    nrrd.write(str(tmp_path / "sing.nrrd"), _data(), {"space": "right-anterior-superior",
                                                     "space directions": directions, "space origin": RAS_ORIGIN})
    with pytest.raises((GeometryError, CorruptFileError), match=r"sing\.nrrd"):
        read_image(tmp_path / "sing.nrrd")
