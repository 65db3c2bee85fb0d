import pytest

from deepmia.errors import ReadError, UnsupportedFormatError
from deepmia.io import format_of, read_image


@pytest.mark.parametrize(
    "name, fmt",
    [("a.nii.gz", "nifti"), ("a.NII", "nifti"), ("a.nrrd", "nrrd"), ("a.mha", "metaimage"), ("a.tiff", "tiff"),
     ("a.png", "png"), ("a.npz", "numpy"), ("a.dcm", "dicom")],
)
def test_format_from_suffix(name, fmt):
    assert format_of(name, must_exist=False) == fmt


def test_unknown_suffix_lists_known_ones(tmp_path):
    p = tmp_path / "x.foo"
    p.write_bytes(b"hello")
    with pytest.raises(UnsupportedFormatError, match=r"x\.foo.*known suffixes"):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        read_image(tmp_path / "nope.nii.gz")


def test_image_file_names(tmp_path):
    from deepmia.io import image_stem, is_image_file

    (tmp_path / "case_01.nii.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert is_image_file(tmp_path / "case_01.nii.gz") and not is_image_file(tmp_path / "notes.txt")
    assert not is_image_file(tmp_path / "missing.png")
    assert image_stem("a/case_01.nii.gz") == "case_01" and image_stem("x.PNG") == "x" and image_stem("n.txt") == "n.txt"
