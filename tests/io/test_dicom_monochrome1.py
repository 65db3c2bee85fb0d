"""MONOCHROME1 is read with MONOCHROME2 semantics (low = dark), and missing or zero PixelSpacing is unknown.

The inversion is ``x' = (lo + hi) - x`` over the range the stored values map to (BitsStored through the rescale),
so it is checked here against that formula computed from the header, for single files, series and multi-frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from deepmia.errors import GeometryError
from deepmia.io import read_image, spacing_known

CR_FILM = "dicom/pydicom/RG1_J2KI.dcm"  # a real CR chest film, MONOCHROME1, PixelSpacing [0, 0]


def _mono1(path: Path, pixels: np.ndarray, *, slope: float | None = None, intercept: float | None = None,
           bits: int = 12, signed: bool = False, position: float | None = None, frames_step: float | None = None,
           spacing: list[float] | None = None, series_uid: str = "1.2.3.4") -> Path:
    """Write a MONOCHROME1 file of ``pixels`` ``(rows, cols)`` or ``(frames, rows, cols)``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = series_uid, "1.2.3", "DX"
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME1", 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    if spacing is not None:
        ds.PixelSpacing = spacing
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if position is not None:
        ds.ImagePositionPatient = [0.0, 0.0, position]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = int(position) + 1
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
        ds.SpacingBetweenSlices = frames_step
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _expected(stored: np.ndarray, bits: int, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """MONOCHROME2 values: modality values reflected onto the modality range of ``bits`` stored bits."""
    lo, hi = 0, (1 << bits) - 1
    return (slope * lo + intercept) + (slope * hi + intercept) - (slope * stored.astype(np.float64) + intercept)


def test_cr_film_is_read_bone_bright(shared_data):
    image = read_image(shared_data / CR_FILM)
    a = image.array[0].astype(np.float64)  # (X = columns, Y = rows)
    nx, ny = a.shape
    lung = a[int(0.22 * nx): int(0.35 * nx), int(0.25 * ny): int(0.40 * ny)]  # the right lung, on the image left
    mediastinum = a[int(0.46 * nx): int(0.54 * nx), int(0.40 * ny): int(0.60 * ny)]
    assert mediastinum.mean() > lung.mean() + 0.1 * (a.max() - a.min())  # air dark, mediastinum and bone bright
    raw = pydicom.dcmread(shared_data / CR_FILM).pixel_array  # BitsStored 15, no rescale
    np.testing.assert_array_equal(image.array[0], (2**15 - 1) - raw.T)
    assert image.dtype == raw.dtype
    assert image.meta["inverted_from"] == "MONOCHROME1"
    assert image.meta["photometric_interpretation"] == "MONOCHROME2"
    assert image.meta["inversion_sum"] == 2**15 - 1


def test_single_file_inversion_respects_the_rescale(tmp_path):
    stored = np.array([[0, 100, 4095], [7, 2000, 3000]])
    path = _mono1(tmp_path / "x.dcm", stored, slope=2.0, intercept=-100.0)
    image = read_image(path)
    np.testing.assert_allclose(image.array[0], _expected(stored, 12, 2.0, -100.0).T)
    assert image.meta["inversion_sum"] == 2 * 4095 - 200
    # The lowest stored value (white in MONOCHROME1) is now the highest.
    assert image.array[0].max() == image.array[0][0, 0]


def test_signed_integral_rescale_keeps_an_integer_dtype(tmp_path):
    stored = np.array([[-2048, 0, 2047], [5, -5, 100]])
    path = _mono1(tmp_path / "s.dcm", stored, slope=1.0, intercept=24.0, signed=True)
    image = read_image(path)
    assert np.issubdtype(image.dtype, np.integer)
    # Range [-2048 + 24, 2047 + 24]: x' = 47 - x for modality values x.
    np.testing.assert_array_equal(image.array[0], (47 - (stored + 24)).T)


def test_series_and_multiframe_are_inverted(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 1024, size=(3, 4, 5))
    folder = tmp_path / "series"
    folder.mkdir()
    for z in range(3):
        _mono1(folder / f"{z}.dcm", stored[z], bits=10, position=float(z) * 2.0, spacing=[0.5, 0.5])
    series = read_image(folder)
    assert series.spatial_shape == (5, 4, 3) and series.meta["inverted_from"] == "MONOCHROME1"
    np.testing.assert_array_equal(series.array[0], (1023 - stored).transpose(2, 1, 0))
    multi = read_image(_mono1(tmp_path / "mf.dcm", stored, bits=10, position=0.0, frames_step=2.0,
                              spacing=[0.5, 0.5]))
    np.testing.assert_array_equal(multi.array, series.array)
    assert multi.meta["inverted_from"] == "MONOCHROME1"


def test_monochrome2_is_not_touched(shared_data):
    image = read_image(shared_data / "dicom/pydicom/693_UNCI.dcm")
    assert "inverted_from" not in image.meta and image.meta["photometric_interpretation"] == "MONOCHROME2"


@pytest.mark.parametrize("spacing", [None, [0.0, 0.0], [0.2, -1.0]])
def test_missing_or_zero_pixel_spacing_is_unknown(tmp_path, spacing):
    image = read_image(_mono1(tmp_path / "x.dcm", np.zeros((3, 4)), spacing=spacing))
    assert image.meta["spacing_unknown"] is True and not spacing_known(image)
    assert "spacing is unknown" in image.meta["geometry"]


def test_real_pixel_spacing_is_known(tmp_path):
    image = read_image(_mono1(tmp_path / "x.dcm", np.zeros((3, 4)), spacing=[0.2, 0.3]))
    assert spacing_known(image) and "spacing_unknown" not in image.meta
    assert image.spacing[:2] == pytest.approx((0.3, 0.2))


def test_cr_film_with_zero_spacing_is_unknown(shared_data):
    assert not spacing_known(read_image(shared_data / CR_FILM))


def test_series_with_zero_pixel_spacing_is_refused_by_name(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for z in range(3):
        _mono1(folder / f"{z}.dcm", np.zeros((3, 4)), position=2.0 * z, spacing=[0.0, 0.0])
    with pytest.raises(GeometryError, match="PixelSpacing missing or zero") as err:
        read_image(folder)
    assert str(folder) in str(err.value)
