"""Bad input: truncated files, stray files, empty folders, mixed sizes, localizers; enhanced multi-frame."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from deepmia.errors import CorruptFileError, GeometryError, SeriesError
from deepmia.io import read_image
from deepmia.io.dicom import list_series, read_series

SERIES = "dicom/dicom2nifti/siemens/anatomical/001"


def _copy_series(shared_data, tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(shared_data / SERIES, folder)
    return folder


def test_truncated_file(shared_data, tmp_path):
    src = sorted((shared_data / SERIES).iterdir())[0]
    data = src.read_bytes()
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as err:
        read_image(bad)
    assert str(bad) in str(err.value)


def test_truncated_slice_in_series_names_it(shared_data, tmp_path):
    folder = _copy_series(shared_data, tmp_path)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-5000])
    with pytest.raises(CorruptFileError) as err:
        read_series(folder)
    assert victim.name in str(err.value)


def test_stray_non_dicom_file_is_refused_by_read_and_skipped_by_list(shared_data, tmp_path):
    folder = _copy_series(shared_data, tmp_path)
    (folder / "notes.bin").write_bytes(b"not dicom at all" * 20)
    with pytest.raises(SeriesError) as err:
        read_series(folder)
    assert "notes.bin" in str(err.value)
    listed = list_series(folder)
    assert len(listed) == 1 and listed[0].num_files == 4
    assert [p for p, _ in listed.skipped] == [str(folder / "notes.bin")]


def test_obvious_sidecars_are_skipped_and_recorded(shared_data, tmp_path):
    folder = _copy_series(shared_data, tmp_path)
    (folder / "README.txt").write_text("scan notes")
    image = read_series(folder)
    assert image.spatial_shape == (256, 256, 4)
    assert [p for p, _ in image.meta["skipped"]] == [str(folder / "README.txt")]


def test_empty_folder(tmp_path):
    with pytest.raises(SeriesError, match="empty"):
        read_image(tmp_path)
    assert list_series(tmp_path) == []


def test_same_series_with_different_image_sizes(shared_data, tmp_path):
    folder = _copy_series(shared_data, tmp_path)
    victim = sorted(folder.iterdir())[2]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.pixel_array[:128, :200].tobytes()
    ds.Rows, ds.Columns = 128, 200
    ds.save_as(victim)
    with pytest.raises(SeriesError) as err:
        read_series(folder)
    assert "mixed image sizes" in str(err.value) and "128x200" in str(err.value) and victim.name in str(err.value)


def test_localizer_mixed_in_is_named(shared_data, tmp_path):
    folder = shared_data / "dicom/mr_study/Study3/11-T1post-18670"
    work = tmp_path / "series"
    shutil.copytree(folder, work)
    victim = sorted(work.iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(victim)
    with pytest.raises(SeriesError) as err:
        read_series(work)
    assert "localizer" in str(err.value) and victim.name in str(err.value)


def test_missing_geometry_in_a_series(shared_data, tmp_path):
    folder = _copy_series(shared_data, tmp_path)
    victim = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim)
    with pytest.raises(GeometryError, match="no patient geometry"):
        read_series(folder)


def test_file_list_input_and_series_uid(shared_data):
    files = sorted((shared_data / SERIES).iterdir())
    image = read_series(files)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert image.meta["series_uid"] == uid
    with pytest.raises(SeriesError, match="no series with"):
        read_series(files, series_uid="1.2.3")


def test_enhanced_multiframe_matches_the_legacy_series(shared_data, tmp_path):
    """A legacy MR series converted to one enhanced multi-frame object (highdicom) reads to the same volume."""
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    folder = shared_data / "dicom/mr_study/Study3/11-T1post-18670"
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    enhanced = LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=pydicom.uid.generate_uid(), series_number=99,
        sop_instance_uid=pydicom.uid.generate_uid(), instance_number=1,
    )
    out = tmp_path / "enhanced.dcm"
    enhanced.save_as(out)
    legacy = read_series(folder)
    multi = read_image(out)
    assert multi.spatial_shape == legacy.spatial_shape
    np.testing.assert_allclose(multi.affine, legacy.affine, atol=0.01)
    np.testing.assert_array_equal(multi.array, legacy.array)
