import nibabel as nib
import numpy as np
import pytest

from deepmia.errors import CorruptFileError, GeometryError
from deepmia.image import Image
from deepmia.io import read_image, write_image


def _nifti_with_header(path, data, *, sform=None, scode=0, qform=None, qcode=0, pixdim=None):
    """Write a NIfTI file whose geometry fields are exactly as given (nibabel would rewrite them on save)."""
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    header = nib.load(path).header.copy()
    header.set_sform(np.eye(4) if sform is None else sform, code=scode)
    header.set_qform(np.eye(4) if qform is None else qform, code=qcode)
    if pixdim is not None:
        header["pixdim"][1:4] = pixdim
    with open(path, "r+b") as f:  # uncompressed .nii: the header is the first 348 bytes
        f.write(header.binaryblock)
    return path


GOOD = np.array([[0.0, 0.0, 2.0, 10.0], [-3.0, 0.0, 0.0, 20.0], [0.0, 4.0, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]])


def _bad(kind):
    a = GOOD.copy()
    if kind == "zero":
        a[:3, 1] = 0.0
    else:
        a[1, 3] = np.nan
    return a


@pytest.mark.parametrize("defect", ["zero", "nan"])
def test_bad_sform_is_refused_not_replaced_by_qform(tmp_path, defect):
    # A valid qform is present: nibabel would use it, but the file declares its sform, which is broken.
    p = _nifti_with_header(tmp_path / "bad.nii", np.zeros((3, 4, 5), np.int16), sform=_bad(defect), scode=1,
                           qform=GOOD, qcode=1)
    with pytest.raises(GeometryError, match=r"bad\.nii.*sform"):
        read_image(p)


@pytest.mark.parametrize("pixdim", [[0.0, 3.0, 4.0], [np.nan, 3.0, 4.0]])
def test_qform_with_zero_or_nan_voxel_size_is_refused(tmp_path, pixdim):
    p = _nifti_with_header(tmp_path / "badq.nii", np.zeros((3, 4, 5), np.int16), qform=GOOD, qcode=1, pixdim=pixdim)
    with pytest.raises(GeometryError, match=r"badq\.nii.*pixdim"):
        read_image(p)


def test_qform_used_when_sform_code_is_zero(tmp_path):
    p = _nifti_with_header(tmp_path / "q.nii", np.zeros((3, 4, 5), np.int16), sform=_bad("zero"), scode=0,
                           qform=GOOD, qcode=1)
    img = read_image(p)
    np.testing.assert_allclose(img.affine, GOOD, atol=1e-5)
    assert img.meta["affine_source"] == "qform"


def test_no_sform_no_qform_uses_voxel_sizes_like_the_standard(tmp_path):
    p = _nifti_with_header(tmp_path / "plain.nii", np.zeros((3, 4, 5), np.int16), pixdim=[2.0, 3.0, 4.0])
    img = read_image(p)
    np.testing.assert_allclose(img.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    assert img.meta["affine_source"] == "pixdim"


def test_label_kind_from_intent_code_and_stays_integral(tmp_path):
    lab = np.random.default_rng(0).integers(0, 5, (1, 6, 7, 8)).astype(np.int16)
    write_image(Image(lab, GOOD, kind="label"), tmp_path / "lab.nii.gz")
    back = read_image(tmp_path / "lab.nii.gz")
    assert back.kind == "label" and back.dtype == np.int16
    np.testing.assert_array_equal(back.array, lab)
    assert read_image(tmp_path / "lab.nii.gz", kind="intensity").kind == "intensity"


def test_float_label_file_becomes_integral_or_is_refused(tmp_path):
    whole = np.array([[[0.0, 1.0], [2.0, 3.0]]], np.float32)
    nib.save(nib.Nifti1Image(whole, np.eye(4)), tmp_path / "f.nii.gz")
    img = read_image(tmp_path / "f.nii.gz", kind="label")
    assert np.issubdtype(img.dtype, np.integer)
    np.testing.assert_array_equal(img.array[0], whole)
    nib.save(nib.Nifti1Image(whole + 0.5, np.eye(4)), tmp_path / "g.nii.gz")
    with pytest.raises(CorruptFileError, match=r"g\.nii\.gz.*non-integer"):
        read_image(tmp_path / "g.nii.gz", kind="label")


def test_4d_becomes_channels_and_round_trips(tmp_path):
    data = np.random.default_rng(1).normal(size=(5, 6, 7, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, GOOD), tmp_path / "t.nii.gz")
    img = read_image(tmp_path / "t.nii.gz")
    assert img.shape == (3, 5, 6, 7)
    np.testing.assert_array_equal(img.array[2], data[..., 2])
    write_image(img, tmp_path / "t2.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "t2.nii.gz").dataobj), data)


def test_rgb_nifti_gives_three_channels(shared_data):
    path = shared_data / "dicom" / "dicom2nifti" / "generic" / "rgb" / "001_ground_truth.nii.gz"
    raw = np.asanyarray(nib.load(path).dataobj)
    img = read_image(path)
    assert img.num_channels == 3 and img.dtype == np.uint8
    assert img.spatial_shape == raw.shape
    for c, name in enumerate("RGB"):
        np.testing.assert_array_equal(img.array[c], raw[name])


def test_2d_image_reads_back_as_single_slice_volume(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    write_image(Image(arr, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "flat.nii")
    back = read_image(tmp_path / "flat.nii")
    assert back.shape == (1, 3, 4, 1)
    np.testing.assert_array_equal(back.array[..., 0], arr)


def test_truncated_file_is_corrupt(tmp_path, shared_data):
    blob = (shared_data / "ct_mr_examples" / "example_ct_sm.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptFileError, match=r"cut\.nii\.gz"):
        read_image(tmp_path / "cut.nii.gz")


def test_real_ct_geometry_matches_nibabel(shared_data):
    path = shared_data / "ct_mr_examples" / "example_ct.nii.gz"
    nii = nib.load(path)
    img = read_image(path)
    np.testing.assert_allclose(img.affine, nii.affine)
    assert img.spatial_shape == nii.shape and img.dtype == nii.get_data_dtype()


def test_big_endian_file_keeps_its_type_in_native_order(tmp_path):
    data = np.arange(60, dtype=">i2").reshape(3, 4, 5)
    header = nib.Nifti1Header(endianness=">")
    header.set_data_dtype(np.int16)
    nib.save(nib.Nifti1Image(data, GOOD, header=header), tmp_path / "be.nii")
    assert np.asanyarray(nib.load(tmp_path / "be.nii").dataobj).dtype == np.dtype(">i2")  # really big-endian
    img = read_image(tmp_path / "be.nii")
    assert img.dtype == np.int16 and img.dtype.isnative
    np.testing.assert_array_equal(img.array[0], data)
