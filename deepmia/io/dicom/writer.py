r"""Writing an :class:`~deepmia.image.Image` as a derived DICOM series: one file per slice.

The series is a *derived* one (``ImageType = DERIVED\SECONDARY``): it keeps the Patient, General Study, General
Equipment and Frame of Reference modules of a reference (the series it was computed from), gets new Series and SOP
Instance UIDs, and points back at its source with ``ReferencedSeriesSequence`` and ``SourceImageSequence``.

Storage class: CT Image Storage when the modality is CT, MR Image Storage when it is MR, otherwise (and always
for RGB) Secondary Capture Image Storage. Every file carries the Image Plane attributes, so ITK, GDCM, pydicom
based readers and viewers place it in the world.

Geometry is exact: the RAS+ affine is converted once to LPS (``image.lps_affine``); ``ImageOrientationPatient``
holds the directions of the column index (x, first array axis) and the row index (y, second array axis),
``PixelSpacing`` is ``[spacing_y, spacing_x]``, and each slice's ``ImagePositionPatient`` is the world position of
its first voxel. Oblique and flipped affines round-trip; a sheared affine (slice axis not perpendicular to the
slice plane, or in-plane axes not perpendicular) cannot be stored as a classic series and is refused.

Pixel values:

* Integer data (and booleans) are stored as they are in 16 bits: ``uint16`` (``PixelRepresentation`` 0) when
  all values are non-negative, else ``int16``. Integer data whose range does not fit is shifted with
  ``RescaleIntercept`` when its span (max - min) fits in 16 bits, so it still round-trips exactly; otherwise it
  is refused. Label images therefore always round-trip exactly or are refused.
* Float data holding only integers whose span fits in 16 bits is stored exactly (slope 1). Other float data is
  quantised to ``uint16`` with ``RescaleSlope = (max - min) / 65000`` and ``RescaleIntercept = min``; every value
  round-trips within half a quantisation step, ``(max - min) / 130000`` (plus the 16-digit decimal rounding of the
  DS values). NaN or infinite values are refused.
* Three ``uint8`` channels are written as RGB (Secondary Capture). Other multi-channel images are refused: write
  one series per channel with ``image.with_array(image.array[c : c + 1])``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import WriteError
from deepmia.image import Image

__all__ = ["write_series", "QUANTISATION_LEVELS"]

#: Number of quantisation steps used for float data (the stored values span 0..QUANTISATION_LEVELS).
QUANTISATION_LEVELS = 65000

_CT = "1.2.840.10008.5.1.4.1.1.2"
_MR = "1.2.840.10008.5.1.4.1.1.4"
_SC = "1.2.840.10008.5.1.4.1.1.7"
_STORAGE = {"CT": _CT, "MR": _MR}

# Attributes copied from the reference: Patient, General Study, Patient Study, General Equipment, Frame of Reference
# (and the de-identification status, which belongs to the patient module and must not be lost).
_PATIENT = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence",
    "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "LongitudinalTemporalInformationModified", "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID", "ClinicalTrialSubjectID", "ClinicalTrialSiteID",
)
_STUDY = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "StudyDescription",
)
_EQUIPMENT = (
    "Manufacturer", "InstitutionName", "InstitutionAddress", "StationName", "InstitutionalDepartmentName",
    "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions",
)
_FRAME = ("FrameOfReferenceUID", "PositionReferenceIndicator")
_KEPT = _PATIENT + _STUDY + _EQUIPMENT + _FRAME


@dataclass(frozen=True)
class _Pixels:
    """Stored pixel values per slice plus how to map them back."""

    stored: np.ndarray  # (X, Y, Z) or (X, Y, Z, 3) for RGB
    signed: bool
    bits: int
    slope: float
    intercept: float


@dataclass(frozen=True)
class _Reference:
    datasets: tuple[Any, ...]  # pydicom Datasets (header only) of the source series


def _fail(problem: str, folder: Path, fix: str | None = None) -> WriteError:
    return WriteError(problem, path=folder, fix=fix)


# ----------------------------------------------------------------------------------------------- reference
def _read_header(path: Path) -> Any | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError):
        return None


def _load_reference(reference: Any, folder: Path) -> _Reference | None:
    import pydicom

    if reference is None:
        return None
    if isinstance(reference, pydicom.Dataset):
        return _Reference((reference,))
    if isinstance(reference, (str, PathLike)):
        ref = Path(reference)
        if ref.is_file():
            ds = _read_header(ref)
            if ds is None:
                raise _fail(f"reference {ref} is not a DICOM file", folder)
            return _Reference((ds,))
        if ref.is_dir():
            headers = [h for p in sorted(ref.rglob("*")) if p.is_file() and (h := _read_header(p)) is not None]
            headers = [h for h in headers if "SOPInstanceUID" in h]
            if not headers:
                raise _fail(f"reference folder {ref} holds no DICOM files", folder)
            series = {str(h.get("SeriesInstanceUID", "")) for h in headers}
            if len(series) > 1:
                raise _fail(
                    f"reference folder {ref} holds {len(series)} series", folder,
                    "pass the folder of one series, or one of its files",
                )
            return _Reference(tuple(headers))
        raise _fail(f"reference {ref} does not exist", folder)
    raise _fail(
        f"reference must be a pydicom Dataset, a DICOM file or a series folder, got {type(reference).__name__}", folder
    )


def _reference_from_meta(image: Image) -> _Reference | None:
    """A reference carried in ``image.meta["dicom"]`` (a pydicom Dataset of the source series), if any."""
    import pydicom

    ds = image.meta.get("dicom")
    return _Reference((ds,)) if isinstance(ds, pydicom.Dataset) else None


# ------------------------------------------------------------------------------------------------ geometry
def _plane_geometry(image: Image, folder: Path) -> tuple[list[float], list[float], float, np.ndarray]:
    """ImageOrientationPatient, PixelSpacing, slice spacing, and the LPS position of each slice."""
    lps = image.lps_affine
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    unit = cols / spacing
    if abs(float(unit[:, 0] @ unit[:, 1])) > 1e-4:
        raise _fail(
            "the in-plane voxel axes are not perpendicular (sheared affine); DICOM pixel rows and columns are",
            folder, "resample the image to an orthogonal grid first",
        )
    normal = np.cross(unit[:, 0], unit[:, 1])
    nz = image.spatial_shape[2] if image.spatial_dims == 3 else 1
    if nz > 1 and abs(abs(float(unit[:, 2] @ normal)) - 1) > 1e-6:
        raise _fail(
            "the slice axis is not perpendicular to the slice plane (sheared affine); a classic DICOM series "
            "cannot store it", folder, "resample the image to an orthogonal grid first",
        )
    iop = [float(v) for v in np.concatenate([unit[:, 0], unit[:, 1]])]
    pixel_spacing = [float(spacing[1]), float(spacing[0])]
    positions = np.array([lps[:3, 3] + k * cols[:, 2] for k in range(nz)])
    return iop, pixel_spacing, float(spacing[2]), positions


# -------------------------------------------------------------------------------------------------- pixels
def _ds_number(value: float) -> float:
    """The float a DS (16-character decimal string) of ``value`` reads back as."""
    from pydicom.valuerep import format_number_as_ds

    return float(format_number_as_ds(float(value)))


def _integer_pixels(arr: np.ndarray, folder: Path, *, what: str) -> _Pixels:
    lo = int(arr.min()) if arr.size else 0
    hi = int(arr.max()) if arr.size else 0
    if lo >= 0 and hi <= 0xFFFF:
        return _Pixels(arr.astype(np.uint16), False, 16, 1.0, 0.0)
    if lo >= -(2**15) and hi < 2**15:
        return _Pixels(arr.astype(np.int16), True, 16, 1.0, 0.0)
    if hi - lo <= 0xFFFF:
        return _Pixels((arr.astype(np.int64) - lo).astype(np.uint16), False, 16, 1.0, float(lo))
    raise _fail(
        f"{what} values span {lo}..{hi}, more than the 65536 levels a 16-bit DICOM image holds exactly", folder,
        "reduce the range, or convert to float to store it quantised",
    )


def _float_pixels(arr: np.ndarray, folder: Path) -> _Pixels:
    if not np.all(np.isfinite(arr)):
        raise _fail("the image holds NaN or infinite values, which DICOM cannot store", folder,
                    "replace them (e.g. np.nan_to_num) before writing")
    if arr.size == 0:
        return _Pixels(arr.astype(np.uint16), False, 16, 1.0, 0.0)
    rounded = np.rint(arr)
    if np.array_equal(rounded, arr) and float(rounded.max()) - float(rounded.min()) <= 0xFFFF:
        return _integer_pixels(rounded.astype(np.int64), folder, what="float")
    lo, hi = float(arr.min()), float(arr.max())
    intercept = _ds_number(lo)
    slope = _ds_number((hi - intercept) / QUANTISATION_LEVELS) or 1.0
    stored = np.clip(np.rint((arr.astype(np.float64) - intercept) / slope), 0, 0xFFFF).astype(np.uint16)
    return _Pixels(stored, False, 16, slope, intercept)


def _pixels(image: Image, folder: Path) -> _Pixels:
    arr = image.array
    if image.spatial_dims == 2:
        arr = arr[..., None]
    if image.num_channels == 3 and arr.dtype == np.uint8 and image.kind == "intensity":
        return _Pixels(np.moveaxis(arr, 0, -1), False, 8, 1.0, 0.0)
    if image.num_channels != 1:
        raise _fail(
            f"cannot write {image.num_channels} channels of {arr.dtype} as one DICOM series (only 1 channel, "
            "or 3 uint8 channels as RGB)", folder,
            "write one series per channel with image.with_array(image.array[c : c + 1])",
        )
    data = arr[0]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.integer):
        return _integer_pixels(data, folder, what="integer")
    if np.issubdtype(data.dtype, np.floating):
        return _float_pixels(data, folder)
    raise _fail(f"cannot store pixels of dtype {data.dtype} in DICOM", folder, "convert to an integer or float dtype")


# ------------------------------------------------------------------------------------------------ datasets
def _base_dataset(
    image: Image, ref: _Reference | None, *, modality: str, sop_class: str, series_uid: str,
    series_description: str, series_number: int,
) -> Any:
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    source = ref.datasets[0] if ref else None
    if source is not None:
        for keyword in _KEPT:
            if keyword in source:
                ds[keyword] = source[keyword]
    else:
        ds.PatientName = image.meta.get("patient_name", "")
        ds.PatientID = str(image.meta.get("patient_id", ""))
        ds.StudyInstanceUID = image.meta.get("study_uid") or generate_uid()
        if image.meta.get("frame_of_reference_uid"):
            ds.FrameOfReferenceUID = image.meta["frame_of_reference_uid"]
    for keyword, empty in (("PatientName", ""), ("PatientID", ""), ("PatientBirthDate", ""), ("PatientSex", ""),
                           ("StudyDate", ""), ("StudyTime", ""), ("ReferringPhysicianName", ""), ("StudyID", ""),
                           ("AccessionNumber", ""), ("Manufacturer", "")):
        if keyword not in ds:
            setattr(ds, keyword, empty)
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid()
        ds.PositionReferenceIndicator = ""
    ds.setdefault("PositionReferenceIndicator", "")
    now = datetime.datetime.now()
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.SeriesDate
    ds.ContentTime = ds.SeriesTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SoftwareVersions = _software_version()
    if "PatientOrientation" not in ds:
        ds.PatientOrientation = ""
    if "Laterality" not in ds:  # General Series, Type 2C: the writer cannot know it, so it is empty (unknown)
        ds.Laterality = ""
    if sop_class == _SC:
        ds.ConversionType = "WSD"
    if sop_class == _MR:
        ds.ScanningSequence = "RM"  # research mode: a derived image has no acquisition sequence
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.EchoTime = ""
        ds.RepetitionTime = ""
        ds.EchoTrainLength = ""
        ds.ImagingFrequency = ""
        ds.MagneticFieldStrength = ""
    if sop_class == _CT:
        ds.KVP = ""
        ds.AcquisitionNumber = ""
    if ref is not None:
        _add_references(ds, ref)
    return ds


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return f"deepmia {version('deepmia')}"
    except Exception:  # not installed as a distribution (source checkout)
        return "deepmia"


def _add_references(ds: Any, ref: _Reference) -> None:
    from pydicom import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    by_series: dict[str, list[Any]] = {}
    for src in ref.datasets:
        if "SOPInstanceUID" in src and "SOPClassUID" in src:
            by_series.setdefault(str(src.get("SeriesInstanceUID", "")), []).append(src)
    series_items = []
    source_items = []
    for series_uid, members in by_series.items():
        instances = []
        for src in members:
            item = Dataset()
            item.ReferencedSOPClassUID = src.SOPClassUID
            item.ReferencedSOPInstanceUID = src.SOPInstanceUID
            instances.append(item)
            source = Dataset()
            source.ReferencedSOPClassUID = src.SOPClassUID
            source.ReferencedSOPInstanceUID = src.SOPInstanceUID
            source_items.append(source)
        if series_uid:
            s = Dataset()
            s.SeriesInstanceUID = series_uid
            s.ReferencedInstanceSequence = DicomSequence(instances)
            series_items.append(s)
    if series_items:
        ds.ReferencedSeriesSequence = DicomSequence(series_items)
    if source_items:
        ds.SourceImageSequence = DicomSequence(source_items)


def _modality(image: Image, ref: _Reference | None, modality: str | None) -> str:
    if modality:
        return str(modality).upper()
    if ref is not None and ref.datasets[0].get("Modality"):
        return str(ref.datasets[0].Modality).upper()
    return str(image.meta.get("modality") or "OT").upper()


def write_series(
    image: Image,
    folder: str | PathLike[str],
    *,
    reference: Any = None,
    series_description: str = "deepmia derived",
    modality: str | None = None,
    series_number: int = 1000,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``image`` as a derived DICOM series, one file per slice, into ``folder``.

    Args:
        image: A 3D image ``(1, X, Y, Z)`` (or 2D, ``(1, X, Y)``, written as one slice); 3 ``uint8`` channels are
            written as RGB.
        folder: Output folder (created). Files are named ``IM000001.dcm`` ... in slice order.
        reference: The source series: a pydicom ``Dataset``, a DICOM file, or a folder holding one series. Its
            Patient, Study, Equipment and Frame of Reference modules are kept and its instances referenced.
            Without it, ``image.meta["dicom"]`` (a ``Dataset``) is used when present, else ``patient_id``,
            ``study_uid`` and ``frame_of_reference_uid`` from ``image.meta`` (new UIDs where missing).
        series_description: ``SeriesDescription`` of the new series.
        modality: ``Modality`` of the new series; defaults to the reference's, else ``image.meta["modality"]``,
            else ``"OT"``. CT and MR select CT / MR Image Storage, anything else Secondary Capture.
        series_number: ``SeriesNumber`` of the new series.
        overwrite: Allow writing into a folder that already holds files.

    Returns:
        The written files, in slice order.

    Raises:
        WriteError: The image cannot be represented (sheared geometry, too many channels, values out of the
            16-bit range, NaN), the reference is unusable, or the folder is not empty.
    """
    from pydicom.uid import generate_uid

    out = Path(folder)
    _check_folder(out, overwrite)
    ref = _load_reference(reference, out) or _reference_from_meta(image)
    iop, pixel_spacing, slice_spacing, positions = _plane_geometry(image, out)
    pixels = _pixels(image, out)
    mod = _modality(image, ref, modality)
    sop_class = _SC if pixels.stored.ndim == 4 else _STORAGE.get(mod, _SC)
    base = _base_dataset(
        image, ref, modality=mod, sop_class=sop_class, series_uid=generate_uid(),
        series_description=series_description, series_number=series_number,
    )
    _set_plane(base, iop, pixel_spacing, slice_spacing)
    _set_pixel_description(base, pixels)
    base.BurnedInAnnotation = "NO"
    if image.kind == "label":
        base.ImageComments = "label image (integer class values)"
    out.mkdir(parents=True, exist_ok=True)
    return _write_slices(base, pixels, positions, iop, sop_class=sop_class, out=out)


def _check_folder(out: Path, overwrite: bool) -> None:
    """Refuse a path that is a file, or a folder that already holds files unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise _fail("exists and is not a folder; a DICOM series is written into a folder", out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise _fail("folder is not empty", out, "choose an empty folder or pass overwrite=True")


def _set_plane(base: Any, iop: list[float], pixel_spacing: list[float], slice_spacing: float) -> None:
    """Image Plane attributes shared by every slice (orientation and spacings)."""
    base.ImageOrientationPatient = [_ds_number(v) for v in iop]
    base.PixelSpacing = [_ds_number(v) for v in pixel_spacing]
    base.SliceThickness = _ds_number(slice_spacing)
    base.SpacingBetweenSlices = _ds_number(slice_spacing)


def _set_pixel_description(base: Any, pixels: _Pixels) -> None:
    """Image Pixel attributes, and for grey images the rescale and a window covering the stored range."""
    nx, ny = pixels.stored.shape[:2]
    base.Rows = ny
    base.Columns = nx
    base.BitsAllocated = pixels.bits
    base.BitsStored = pixels.bits
    base.HighBit = pixels.bits - 1
    base.PixelRepresentation = int(pixels.signed)
    if pixels.stored.ndim == 4:  # (X, Y, Z, 3): RGB
        base.SamplesPerPixel = 3
        base.PhotometricInterpretation = "RGB"
        base.PlanarConfiguration = 0
        return
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.RescaleIntercept = pixels.intercept
    base.RescaleSlope = pixels.slope
    base.RescaleType = "US"
    lo = float(pixels.stored.min()) * pixels.slope + pixels.intercept if pixels.stored.size else 0.0
    hi = float(pixels.stored.max()) * pixels.slope + pixels.intercept if pixels.stored.size else 0.0
    base.WindowCenter = _ds_number((lo + hi) / 2)
    base.WindowWidth = _ds_number(max(hi - lo, 1.0))


def _write_slices(
    base: Any, pixels: _Pixels, positions: np.ndarray, iop: list[float], *, sop_class: str, out: Path
) -> list[Path]:
    """One file per slice, ``IM000001.dcm`` ... in slice order: ``base`` plus the slice's own attributes."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    normal = np.cross(iop[:3], iop[3:])
    written: list[Path] = []
    for k, position in enumerate(positions):
        ds = pydicom.Dataset()
        ds.update(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.SliceLocation = _ds_number(float(np.dot(position, normal)))
        plane = pixels.stored[:, :, k]  # (X, Y[, 3]) -> rows are y
        ds.PixelData = np.ascontiguousarray(np.swapaxes(plane, 0, 1)).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = out / f"IM{k + 1:06d}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except (OSError, ValueError) as exc:
            raise _fail(f"could not write {path.name}: {exc}", out) from exc
        written.append(path)
    return written

