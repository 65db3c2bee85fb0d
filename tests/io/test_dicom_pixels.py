"""Pixel values of pydicom's test files: every decodable file matches pydicom's own decoding + Modality LUT."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from deepmia.errors import CorruptFileError, MissingCodecError, ReadError
from deepmia.io import read_image
from deepmia.io.dicom import apply_voi_lut

PYDICOM_DIR = Path(__file__).resolve().parents[3] / "shared/data/dicom/pydicom"
FILES = sorted(p.name for p in PYDICOM_DIR.glob("*.dcm")) or ["(no data)"]

# Files no installed decoder handles, or that are damaged, and the typed error each must raise.
EXPECTED_ERRORS = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": (CorruptFileError, "truncated"),
    "liver_deflate.dcm": (MissingCodecError, "pydicom>=3.1"),
    "liver_nonbyte_aligned_deflate.dcm": (MissingCodecError, "pydicom>=3.1"),
    "liver_rle.dcm": (CorruptFileError, "RLE Lossless"),
    "liver_nonbyte_aligned_rle.dcm": (CorruptFileError, "RLE Lossless"),
}


def _reference(path: Path) -> np.ndarray:
    """pydicom's frames (F, rows, cols[, 3]) as modality values (palette colour looked up into RGB)."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            from pydicom.dataset import FileMetaDataset
            from pydicom.uid import ImplicitVRLittleEndian

            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[None]
    if "PerFrameFunctionalGroupsSequence" in ds:
        out = []
        for f in range(frames):
            group = ds.PerFrameFunctionalGroupsSequence[f]
            pvt = group.get("PixelValueTransformationSequence") or (
                ds.SharedFunctionalGroupsSequence[0].get("PixelValueTransformationSequence")
                if "SharedFunctionalGroupsSequence" in ds else None
            )
            item = pvt[0] if pvt else None
            slope = float(item.RescaleSlope) if item is not None else 1.0
            inter = float(item.RescaleIntercept) if item is not None else 0.0
            out.append(arr[f] * slope + inter if (slope, inter) != (1.0, 0.0) else arr[f])
        return np.stack(out)
    if arr.ndim == 3 or "ModalityLUTSequence" in ds:
        arr = np.asarray(apply_modality_lut(arr, ds)) if arr.ndim == 3 else arr
    if ds.PhotometricInterpretation == "MONOCHROME1":  # read as MONOCHROME2: reflected onto the stored range
        bits, signed = int(ds.BitsStored), int(ds.PixelRepresentation) == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        slope, inter = float(ds.get("RescaleSlope") or 1.0), float(ds.get("RescaleIntercept") or 0.0)
        total = (slope * lo + inter) + (slope * hi + inter)
        integral = np.issubdtype(arr.dtype, np.integer) and total.is_integer()
        arr = int(total) - arr.astype(np.int64) if integral else total - arr.astype(np.float64)
    return arr


@pytest.mark.parametrize("name", FILES)
def test_pydicom_file(shared_data, name):
    path = shared_data / "dicom/pydicom" / name
    if name in EXPECTED_ERRORS:
        kind, text = EXPECTED_ERRORS[name]
        with pytest.raises(kind) as err:
            read_image(path)
        assert text in str(err.value) and str(path) in str(err.value)
        return
    image = read_image(path)
    ref = _reference(path)
    arr = image.array if image.spatial_dims == 3 else image.array[..., None]
    ours = np.moveaxis(arr, 0, -1).transpose(2, 1, 0, 3)  # -> (F, rows, cols, C)
    ref = ref if ref.ndim == 4 else ref[..., None]
    assert ours.shape == ref.shape
    if np.issubdtype(ref.dtype, np.integer):
        assert np.issubdtype(image.dtype, np.integer), f"{image.dtype}: integer data must stay integer"
    # Frames may be re-ordered along the slice normal: match each slice to one reference frame.
    used = set()
    for z in range(ours.shape[0]):
        hits = [f for f in range(ref.shape[0]) if f not in used and np.allclose(ours[z], ref[f], rtol=1e-6)]
        assert hits, f"slice {z} matches no reference frame"
        used.add(hits[0])


def test_files_without_preamble_are_read(shared_data):
    path = shared_data / "dicom/pydicom/OT-PAL-8-face.dcm"
    assert path.read_bytes()[128:132] != b"DICM"
    image = read_image(path)
    assert image.num_channels == 3 and image.meta["photometric_interpretation"] == "PALETTE COLOR"


def test_ct_rescale_gives_hounsfield_units_in_integers(shared_data):
    image = read_image(shared_data / "dicom/pydicom/693_UNCI.dcm")
    assert image.dtype == np.int16 and image.array.min() < 0  # BitsStored 14 - 1024 fits int16


def test_non_identity_rescale_is_float(shared_data):
    image = read_image(shared_data / "dicom/pydicom/MR2_UNCI.dcm")
    assert image.dtype == np.float32


def test_voi_lut_is_a_separate_step(shared_data):
    import pydicom

    path = shared_data / "dicom/pydicom/vlut_04.dcm"
    ds = pydicom.dcmread(path)
    image = read_image(path)
    assert np.array_equal(image.array[0].T, ds.pixel_array)  # not applied on read
    shown = apply_voi_lut(ds.pixel_array, ds)
    assert not np.array_equal(shown, ds.pixel_array)


def test_missing_codec_names_the_package(shared_data, monkeypatch):
    import pydicom

    def refuse(self, *a, **k):
        raise NotImplementedError("no plugin")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(refuse))
    with pytest.raises(MissingCodecError) as err:
        read_image(shared_data / "dicom/pydicom/MR2_J2KR.dcm")
    assert "JPEG 2000" in str(err.value) and "pylibjpeg-openjpeg" in str(err.value)
    assert isinstance(err.value, ReadError)
