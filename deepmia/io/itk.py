"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK.

ITK reads both formats into LPS world coordinates, whatever ``space`` a NRRD header declares
(``right-anterior-superior`` and ``left-posterior-superior`` files with the same geometry load identically);
:mod:`deepmia.io.sitk` converts to our RAS+ affine. Vector and multi-component pixels (NRRD ``kinds`` vector,
RGB-color, list; MetaImage ``ElementNumberOfChannels``) become channels, and so does the fourth axis of a 4D
image. The pixel type is kept (int16 stays int16). Writers compress (gzip / zlib); ``.nhdr`` and ``.mhd``
write a detached header beside a ``.raw.gz`` / ``.zraw`` data file. The image kind is kept in a
``deepmia_kind`` header key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, DeepmiaError, GeometryError, WriteError
from deepmia.image import Image, Kind
from deepmia.io import Format, register_format
from deepmia.io._common import KIND_KEY, build_image, with_path
from deepmia.io.sitk import from_sitk, to_sitk

_FORMAT_OF_SUFFIX = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}


def _itk_reason(exc: RuntimeError) -> str:
    """The useful part of a SimpleITK exception: the ITK error line and, for NRRD, teem's innermost complaint."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    main = next((ln for ln in lines if "ERROR:" in ln), lines[-1] if lines else str(exc))
    main = re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", main)
    last = re.sub(r"^\[nrrd\]\s*\w*:\s*", "", lines[-1]) if lines else ""
    return main if last in main or last.startswith("Reason:") or "ERROR:" in last else f"{main} {last}"


def _split_fourth_axis(sitk: Any, img: Any) -> Any:
    """A 4D scalar image as a 3D vector image whose components are the 4th axis (time, gradients, ...)."""
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CorruptFileError("4D images with vector pixels are not supported", path=None)
    size = list(img.GetSize())
    direction = np.asarray(img.GetDirection()).reshape(4, 4)
    if not np.allclose(direction[:3, 3], 0) or not np.allclose(direction[3, :3], 0):
        raise GeometryError("the 4th axis of this 4D image is not separate from the three spatial axes")
    volumes = [sitk.Extract(img, size[:3] + [0], [0, 0, 0, t]) for t in range(size[3])]
    return sitk.Compose(volumes) if len(volumes) > 1 else volumes[0]


def read(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a NRRD or MetaImage file.

    Args:
        path: A ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd`` file.
        kind: ``"label"`` or ``"intensity"``; ``None`` follows the file's ``deepmia_kind`` key (else intensity).

    Raises:
        CorruptFileError: The file is damaged, truncated or not in the format its suffix names.
        GeometryError: The header's geometry cannot be trusted (zero spacing, singular directions).
    """
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CorruptFileError(
            f"not a readable {_FORMAT_OF_SUFFIX.get(path.suffix.lower(), 'ITK')} file: {_itk_reason(exc)}", path=path
        ) from exc
    file_kind = img.GetMetaData(KIND_KEY) if img.HasMetaDataKey(KIND_KEY) else None
    try:
        if img.GetDimension() == 4:
            img = _split_fourth_axis(sitk, img)
        elif img.GetDimension() not in (2, 3):
            raise CorruptFileError(f"{img.GetDimension()}D images are not supported (2D, 3D or 4D only)")
        image = from_sitk(img, meta={"format": _FORMAT_OF_SUFFIX.get(path.suffix.lower(), "itk")})
    except DeepmiaError as exc:  # add the file name to errors raised while building the image
        raise with_path(exc, path) from exc
    return build_image(image.array, image.affine, kind=kind, file_kind=file_kind, meta=image.meta, path=path)


def write(image: Image, path: Path, **_: Any) -> None:
    """Write a NRRD or MetaImage file (compressed), keeping pixel type, channels, affine and kind.

    Raises:
        WriteError: The pixel type cannot be stored (e.g. float16; convert to float32 first).
    """
    import SimpleITK as sitk

    if image.dtype == np.float16:
        raise WriteError(
            "NRRD/MetaImage cannot store float16", path=path,
            fix="convert with image.with_array(image.array.astype(np.float32))",
        )
    source = image if image.dtype != bool else image.with_array(image.array.astype(np.uint8))
    out = to_sitk(source)
    out.SetMetaData(KIND_KEY, image.kind)
    try:
        sitk.WriteImage(out, str(path), useCompression=True)
    except RuntimeError as exc:
        raise WriteError(f"SimpleITK could not write the file: {_itk_reason(exc)}", path=path) from exc


register_format(Format("nrrd", (".nrrd", ".nhdr"), read=read, write=write))
register_format(Format("metaimage", (".mha", ".mhd"), read=read, write=write))
