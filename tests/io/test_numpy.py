import numpy as np
import pytest

from deepmia.errors import CorruptFileError, UnsupportedFormatError, WriteError
from deepmia.image import Image
from deepmia.io import read_image, write_image

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "shape, expected",
    [((4, 5), (1, 4, 5)), ((4, 5, 6), (1, 4, 5, 6)), ((2, 4, 5, 6), (2, 4, 5, 6))],
)
def test_npy_axis_rule(tmp_path, shape, expected):
    arr = RNG.normal(size=shape).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    img = read_image(tmp_path / "a.npy")
    assert img.shape == expected
    np.testing.assert_array_equal(img.array.reshape(arr.shape), arr)
    np.testing.assert_array_equal(img.affine, np.eye(4))


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5, 6)])
def test_npy_with_other_dimensions_is_refused(tmp_path, shape):
    np.save(tmp_path / "a.npy", np.zeros(shape))
    with pytest.raises(UnsupportedFormatError, match=r"a\.npy.*shape"):
        read_image(tmp_path / "a.npy")


def test_npz_round_trip_is_exact(tmp_path):
    affine = np.array([[0.0, -0.7, 0.0, 3.0], [0.9, 0.0, 0.0, -1.0], [0.0, 0.0, 1.3, 2.0], [0, 0, 0, 1]])
    img = Image(RNG.integers(0, 9, (1, 5, 6, 7)).astype(np.int16), affine, kind="label",
                meta={"modality": "MR", "count": np.int64(3), "values": np.arange(3)})
    write_image(img, tmp_path / "x.npz")
    back = read_image(tmp_path / "x.npz")
    assert back.kind == "label" and back.dtype == np.int16
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_array_equal(back.affine, affine)
    assert back.meta["modality"] == "MR" and back.meta["count"] == 3 and back.meta["values"] == [0, 1, 2]


def test_medmnist_archive_points_to_the_importer(shared_data):
    with pytest.raises(UnsupportedFormatError, match=r"pneumoniamnist\.npz.*deepmia dataset import medmnist"):
        read_image(shared_data / "medmnist" / "pneumoniamnist.npz")


def test_npz_with_several_arrays_needs_a_key(shared_data):
    path = shared_data / "registration" / "brain_t1" / "test_scan.npz"
    with pytest.raises(UnsupportedFormatError, match=r"vol, seg.*key="):
        read_image(path)
    seg = read_image(path, key="seg", kind="label")
    assert seg.shape == (1, 160, 192, 224) and np.issubdtype(seg.dtype, np.integer)
    assert len(np.unique(seg.array)) > 10


def test_npy_writer_refuses_to_drop_geometry(tmp_path):
    with pytest.raises(WriteError, match=r"\.npz"):
        write_image(Image(np.zeros((1, 3, 4, 5)), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "g.npy")
    with pytest.raises(WriteError, match="volume"):
        write_image(Image(np.zeros((3, 4, 5))), tmp_path / "c.npy")
    plain = Image(RNG.normal(size=(1, 3, 4)))
    write_image(plain, tmp_path / "p.npy")
    np.testing.assert_array_equal(read_image(tmp_path / "p.npy").array, plain.array)


def test_not_numpy_is_corrupt(tmp_path):
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(CorruptFileError, match=r"x\.npz"):
        read_image(tmp_path / "x.npz")
    write_image(Image(np.zeros((1, 30, 30, 30))), tmp_path / "full.npz")
    blob = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.npz"):
        read_image(tmp_path / "cut.npz")
