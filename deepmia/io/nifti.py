"""NIfTI-1/2 (.nii, .nii.gz) through nibabel. NIfTI is RAS+ already, so the affine is taken as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, GeometryError
from deepmia.image import Image, Kind
from deepmia.io import Format, register_format
from deepmia.io._common import build_image


def _rgb_to_channels(data: np.ndarray) -> np.ndarray:
    """RGB24 / RGBA32 structured voxels as channels.

    An alpha that is fully opaque everywhere carries nothing and is dropped (RGBA32 files converted from RGB
    DICOM have it); any other alpha is kept as a 4th channel.
    """
    names = list(data.dtype.names or ())
    if len(names) == 4 and np.all(data[names[3]] == np.iinfo(data[names[3]].dtype).max):
        names = names[:3]
    return np.stack([data[n] for n in names], axis=0)


def _affine(header: Any, raw: Any, path: Path) -> tuple[np.ndarray, str]:
    """The voxel-to-RAS+ affine the header declares, and where it came from, refusing rather than guessing.

    NIfTI's order: the sform when ``sform_code > 0``, else the qform when ``qform_code > 0``, else (method 1
    of the standard, as niftilib and ITK do) the voxel sizes ``pixdim`` with no rotation and origin 0. A
    declared sform or qform that is not finite or singular is an error; it never falls back to the other.
    ``raw`` is the header as stored: nibabel's loaded ``header`` has zero voxel sizes already replaced by 1 mm.
    """
    if int(header["sform_code"]) > 0:
        affine, source = header.get_sform(), "sform"
    else:
        n = max(1, min(3, int(header["dim"][0])))
        pixdim = np.asarray(raw["pixdim"][1 : 1 + n], dtype=float)  # as in the file, before nibabel's fixes
        source = "qform" if int(header["qform_code"]) > 0 else "pixdim"
        if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):  # nibabel would silently use 1 mm
            raise GeometryError(
                f"the header has no sform and its voxel sizes pixdim {pixdim.tolist()} are zero or not finite",
                path=path, fix="fix pixdim in the file; deepmia will not guess the geometry",
            )
        if source == "qform":
            affine = header.get_qform()
        else:
            affine = np.diag([*np.abs(pixdim), *np.ones(3 - n), 1.0])
    affine = np.asarray(affine, dtype=float)
    m = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or np.any(np.linalg.norm(m, axis=0) == 0) or abs(np.linalg.det(m)) < 1e-12:
        raise GeometryError(
            f"the header's {source} {np.round(affine, 4).tolist()} is singular or not finite", path=path,
            fix="fix the sform/qform in the file; deepmia will not guess the geometry",
        )
    return affine, source


def read(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a NIfTI file. 4D series (fMRI, DTI) become channels; RGB NIfTI becomes 3 channels.

    The affine is the sform when its code is set, else the qform, else the voxel sizes (see :func:`_affine`);
    a declared but singular or non-finite one is refused. Scaling (``scl_slope``/``scl_inter``) is applied.
    A 2D image (stored with a singleton third axis, as every NIfTI file has three) reads back as a 3D
    ``(C, X, Y, 1)`` volume: NIfTI cannot tell a 2D picture from a one-slice volume.

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        kind: ``"label"`` or ``"intensity"``; ``None`` follows the header (``intent_code`` 1002, NIFTI_INTENT_LABEL,
            means label), else intensity. Label images keep or get an integer dtype.

    Raises:
        CorruptFileError: The file is damaged, or a label image holds non-integer values.
        GeometryError: The declared affine is singular or not finite.
    """
    import nibabel as nib

    try:
        nii = nib.load(str(path))
        data = np.asanyarray(nii.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise CorruptFileError(f"not a readable NIfTI file: {exc}", path=path) from exc
    header = nii.header
    with nib.openers.ImageOpener(str(path)) as fobj:
        raw = header.__class__.from_fileobj(fobj, check=False)
    affine, source = _affine(header, raw, path)
    if data.dtype.names:  # RGB24 / RGBA32 structured dtype
        arr = _rgb_to_channels(data)
        if arr.ndim == 3:
            arr = arr[..., None]
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
    file_kind = "label" if int(header.get("intent_code", 0)) == 1002 else None
    meta = {"format": "nifti", "affine_source": source,
            "description": header.get("descrip", b"").tobytes().decode("latin-1").strip("\x00 ")}
    return build_image(arr, affine, kind=kind, file_kind=file_kind, meta=meta, path=path)


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
