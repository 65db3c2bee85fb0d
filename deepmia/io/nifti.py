"""NIfTI-1/2 (.nii, .nii.gz) through nibabel. NIfTI is RAS+ already, so the affine is taken as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, GeometryError
from deepmia.image import Image, Kind
from deepmia.io import Format, register_format


def _rgb_to_channels(data: np.ndarray) -> np.ndarray:
    names = data.dtype.names or ()
    return np.stack([data[n] for n in names], axis=0)


def read(path: Path, *, kind: Kind = "intensity", **_: Any) -> Image:
    """Read a NIfTI file. 4D series (fMRI, DTI) become channels; RGB NIfTI becomes 3 channels.

    The affine is the sform when its code is set, else the qform (nibabel's ``get_best_affine``).
    Scaling (``scl_slope``/``scl_inter``) is applied. Label images keep their integer dtype.
    """
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        data = np.asanyarray(nii.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise CorruptFileError(f"not a readable NIfTI file: {exc}", path=path) from exc
    affine = np.asarray(nii.header.get_best_affine(), dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GeometryError(
            f"the header's affine {np.round(affine, 4).tolist()} is singular or not finite", path=path,
            fix="fix the sform/qform in the file; deepmia will not guess the geometry",
        )
    if data.dtype.names:  # RGB24 / RGBA32 structured dtype
        arr = _rgb_to_channels(data)
    else:
        while data.ndim > 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 2:
            data = data[:, :, None]
        if data.ndim == 3:
            arr = data[None]
        elif data.ndim == 4:
            arr = np.moveaxis(data, -1, 0)
        elif data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): vector data
            arr = np.moveaxis(data[:, :, :, 0], -1, 0)
        else:
            raise CorruptFileError(f"unsupported NIfTI data shape {data.shape}", path=path)
    if kind == "label" and not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise CorruptFileError("label image holds non-integer values", path=path)
        arr = rounded.astype(np.int16 if rounded.max(initial=0) < 32768 and rounded.min(initial=0) >= -32768 else np.int32)
    header = nii.header
    meta = {"format": "nifti", "description": header.get("descrip", b"").tobytes().decode("latin-1").strip("\x00 ")}
    return Image(np.ascontiguousarray(arr), affine, kind=kind, meta=meta)


def write(image: Image, path: Path, **_: Any) -> None:
    """Write a NIfTI file with the image's affine as both sform and qform (code 1, scanner).

    Several channels are written as the 4th dimension. 2D images are written with a singleton third axis.
    """
    import nibabel as nib

    arr = image.array
    if image.spatial_dims == 2:
        arr = arr[..., None]
    data = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.dtype == np.int64 and image.kind == "label" and data.size and data.min() >= -(2**15) and data.max() < 2**15:
        data = data.astype(np.int16)
    nii = nib.Nifti1Image(np.ascontiguousarray(data), image.affine)
    nii.set_sform(image.affine, code=1)
    nii.set_qform(image.affine, code=1)
    if image.kind == "label":
        nii.header["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    nib.save(nii, str(path))


register_format(Format("nifti", (".nii", ".nii.gz"), read=read, write=write))
