"""Writing derived DICOM series: geometry, pixel values and reference modules, checked with independent readers.

SimpleITK (GDCM) reads the series back as a volume; pydicom reads each file. The writer's own package reader is
used too when it exists (``deepmia.io.dicom.read_series``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepmia.errors import WriteError
from deepmia.image import Image
from deepmia.io import read_image, write_image
from deepmia.io.dicom.writer import QUANTISATION_LEVELS, write_series
from deepmia.io.sitk import from_sitk

sitk = pytest.importorskip("SimpleITK")


def read_with_sitk(folder: Path) -> Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return from_sitk(reader.Execute())


def aligned(read: Image, written: Image) -> tuple[np.ndarray, np.ndarray]:
    """The read-back array and affine with axes flipped to match ``written`` (readers sort slices by position)."""
    arr = read.array
    affine = read.affine.copy()
    for axis in range(read.spatial_dims):
        if float(affine[:3, axis] @ written.affine[:3, axis]) < 0:
            n = read.spatial_shape[axis]
            affine[:3, 3] += (n - 1) * affine[:3, axis]
            affine[:3, axis] *= -1
            arr = np.flip(arr, axis=axis + 1)
    return arr, affine


def random_affine(seed: int, flips: tuple[bool, bool, bool]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # random rotation (or reflection)
    spacing = rng.uniform(0.3, 3.0, size=3) * np.where(flips, -1.0, 1.0)
    affine = np.eye(4)
    affine[:3, :3] = q * spacing[None, :]
    affine[:3, 3] = rng.uniform(-200, 200, size=3)
    return affine


def quantisation_tolerance(arr: np.ndarray) -> float:
    span = float(arr.max() - arr.min())
    return 0.5 * span / QUANTISATION_LEVELS * (1 + 1e-6) + 1e-9 * float(np.abs(arr).max())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    dtype=st.sampled_from(["float32", "int16", "uint16", "label"]),
)
def test_nifti_to_dicom_round_trip_keeps_voxels_and_affine(tmp_path_factory, seed, flips, dtype):
    tmp = tmp_path_factory.mktemp("rt")
    rng = np.random.default_rng(seed)
    shape = (1, 9, 11, 5)
    kind = "intensity"
    if dtype == "float32":
        arr = rng.normal(50, 400, shape).astype(np.float32)
    elif dtype == "int16":
        arr = rng.integers(-3000, 3000, shape).astype(np.int16)
    elif dtype == "uint16":
        arr = rng.integers(0, 65535, shape).astype(np.uint16)
    else:
        arr, kind = rng.integers(0, 6, shape).astype(np.uint8), "label"
    write_image(Image(arr, random_affine(seed, flips), kind=kind), tmp / "in.nii.gz")
    image = read_image(tmp / "in.nii.gz", kind=kind)
    write_series(image, tmp / "dcm")

    back, affine = aligned(read_with_sitk(tmp / "dcm"), image)
    np.testing.assert_allclose(affine, image.affine, atol=0.01)
    if dtype == "float32":
        assert np.max(np.abs(back - arr)) <= quantisation_tolerance(arr)
    else:
        np.testing.assert_array_equal(back, arr)


def test_files_validate_with_pydicom(tmp_path):
    arr = np.arange(4 * 5 * 3, dtype=np.int16).reshape(1, 4, 5, 3) - 20
    files = write_series(Image(arr, random_affine(3, (False, True, False))), tmp_path, modality="MR")
    assert [f.name for f in files] == ["IM000001.dcm", "IM000002.dcm", "IM000003.dcm"]
    datasets = [pydicom.dcmread(f) for f in files]
    assert {ds.SeriesInstanceUID for ds in datasets} == {datasets[0].SeriesInstanceUID}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3
    for k, ds in enumerate(datasets):
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.PixelRepresentation == 1
        # pixel rows are y, columns are x
        np.testing.assert_array_equal(ds.pixel_array, arr[0, :, :, k].T)


def test_geometry_tags_match_the_lps_affine(tmp_path):
    affine = random_affine(7, (True, False, True))
    image = Image(np.zeros((1, 6, 4, 3), np.uint8), affine)
    files = write_series(image, tmp_path)
    lps = image.lps_affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        np.testing.assert_allclose(ds.ImagePositionPatient, lps[:3, 3] + k * lps[:3, 2], atol=1e-6)
        np.testing.assert_allclose(ds.ImageOrientationPatient[:3], lps[:3, 0] / spacing[0], atol=1e-9)
        np.testing.assert_allclose(ds.ImageOrientationPatient[3:], lps[:3, 1] / spacing[1], atol=1e-9)
        np.testing.assert_allclose(ds.PixelSpacing, [spacing[1], spacing[0]], atol=1e-9)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(spacing[2])
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage


def test_integer_labels_beyond_16_bits_round_trip_exactly_with_an_intercept(tmp_path):
    arr = np.random.default_rng(0).integers(70000, 70010, (1, 5, 4, 2)).astype(np.int32)
    write_series(Image(arr, kind="label"), tmp_path)
    back, _ = aligned(read_with_sitk(tmp_path), Image(arr))
    np.testing.assert_array_equal(back, arr)


def test_integral_float_is_stored_exactly(tmp_path):
    arr = np.random.default_rng(1).integers(-1024, 3000, (1, 5, 4, 2)).astype(np.float64)
    files = write_series(Image(arr), tmp_path, modality="CT")
    assert float(pydicom.dcmread(files[0]).RescaleSlope) == 1.0
    back, _ = aligned(read_with_sitk(tmp_path), Image(arr))
    np.testing.assert_array_equal(back, arr)


def test_2d_image_is_one_slice(tmp_path):
    arr = np.random.default_rng(2).integers(0, 255, (1, 7, 5)).astype(np.uint8)
    files = write_series(Image(arr, np.diag([0.5, 0.25, 1.0, 1.0])), tmp_path)
    assert len(files) == 1
    ds = pydicom.dcmread(files[0])
    np.testing.assert_array_equal(ds.pixel_array, arr[0].T)
    np.testing.assert_allclose(ds.PixelSpacing, [0.25, 0.5])


def test_rgb_is_written_as_rgb_secondary_capture(tmp_path):
    arr = np.random.default_rng(3).integers(0, 255, (3, 6, 4, 2)).astype(np.uint8)
    files = write_series(Image(arr), tmp_path, modality="MR")
    ds = pydicom.dcmread(files[1])
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    np.testing.assert_array_equal(ds.pixel_array, np.moveaxis(arr[:, :, :, 1], 0, -1).transpose(1, 0, 2))


@pytest.mark.parametrize(
    ("array", "affine", "match"),
    [
        (np.zeros((2, 4, 4, 3), np.float32), None, "2 channels"),
        (np.full((1, 4, 4, 3), np.nan, np.float32), None, "NaN"),
        (np.array([0, 100000]).reshape(1, 2, 1, 1).astype(np.int32), None, "span 0..100000"),
        (np.zeros((1, 4, 4, 3), np.int16), [[1, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "sheared"),
        (np.zeros((1, 4, 4, 3), np.int16), [[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "sheared"),
    ],
)
def test_refuses_what_dicom_cannot_represent(tmp_path, array, affine, match):
    with pytest.raises(WriteError, match=match):
        write_series(Image(array, None if affine is None else np.array(affine, float)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(WriteError, match="not empty"):
        write_series(Image(np.zeros((1, 2, 2, 2), np.uint8)), tmp_path)


def test_reference_series_keeps_patient_study_and_frame(shared_data, tmp_path):
    series = shared_data / "dicom" / "mr_study" / "Study3" / "26401-T1prereg-52906"
    source = read_with_sitk(series)
    derived = source.with_array((source.array > source.array.mean()).astype(np.uint8), kind="label")
    files = write_series(derived, tmp_path, reference=series, series_description="mask")
    ref = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    out = [pydicom.dcmread(f) for f in files]
    for ds in out:
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate"):
            assert ds.get(keyword) == ref.get(keyword), keyword
        assert ds.SeriesInstanceUID != ref.SeriesInstanceUID
        assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.SeriesDescription == "mask"
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.SeriesInstanceUID
        assert len(ds.SourceImageSequence) == len(list(series.iterdir()))
    assert source.is_oblique
    back, affine = aligned(read_with_sitk(tmp_path), derived)
    np.testing.assert_allclose(affine, source.affine, atol=0.01)
    np.testing.assert_array_equal(back, derived.array)


def test_reference_dataset_and_bad_references(tmp_path):
    ref = pydicom.Dataset()
    ref.PatientID = "P1"
    ref.StudyInstanceUID = pydicom.uid.generate_uid()
    ref.Modality = "CT"
    files = write_series(Image(np.zeros((1, 2, 2, 1), np.int16)), tmp_path / "a", reference=ref)
    ds = pydicom.dcmread(files[0])
    expected = ("P1", ref.StudyInstanceUID, pydicom.uid.CTImageStorage)
    assert (ds.PatientID, ds.StudyInstanceUID, ds.SOPClassUID) == expected
    with pytest.raises(WriteError, match="does not exist"):
        write_series(Image(np.zeros((1, 2, 2, 1), np.int16)), tmp_path / "b", reference=tmp_path / "missing")
    (tmp_path / "not.dcm").write_text("hello")
    with pytest.raises(WriteError, match="not a DICOM file"):
        write_series(Image(np.zeros((1, 2, 2, 1), np.int16)), tmp_path / "c", reference=tmp_path / "not.dcm")


@pytest.mark.parametrize("dtype", ["float32", "int16", "label", "rgb"])
def test_round_trip_through_deepmia_read_image(tmp_path, dtype):
    rng = np.random.default_rng(11)
    shape = (3 if dtype == "rgb" else 1, 8, 6, 4)
    kind = "label" if dtype == "label" else "intensity"
    arr = {
        "float32": lambda: rng.normal(0, 1, shape).astype(np.float32),
        "int16": lambda: rng.integers(-1000, 1000, shape).astype(np.int16),
        "label": lambda: rng.integers(0, 4, shape).astype(np.uint8),
        "rgb": lambda: rng.integers(0, 255, shape).astype(np.uint8),
    }[dtype]()
    image = Image(arr, random_affine(5, (True, False, True)), kind=kind, meta={"modality": "CT", "patient_id": "P7"})
    write_image(image, tmp_path / "series", format="dicom")
    back = read_image(tmp_path / "series")
    assert back.meta["patient_id"] == "P7"
    values, affine = aligned(back, image)
    np.testing.assert_allclose(affine, image.affine, atol=0.01)
    if dtype == "float32":
        assert np.max(np.abs(values - arr)) <= quantisation_tolerance(arr)
    else:
        np.testing.assert_array_equal(values, arr)
