"""The volumes the viewer loads: a colour picture as an RGB NIfTI, and the preview of a big volume.

Colour: a 3-channel 8-bit image (a JPEG of a blood smear, an RGB DICOM) is written as one NIfTI of type RGB24, which
NiiVue draws in colour (as a 4D NIfTI of 3 volumes it would show the red channel in grey).

Preview (progressive open): a low-resolution copy of a big volume, drawn while the full volume loads.

A 512x512x300 CT is 79 M voxels: on a CPU renderer (WebGL on SwiftShader) NiiVue spends most of the open building
its textures. The viewer first asks for a preview of at most ``PREVIEW_VOXELS`` voxels, made by averaging blocks of
2^k voxels (SimpleITK's BinShrink: each output voxel is the mean of its block and sits at the block's centre, so
the preview covers the same world extent in the same frame), draws it, then loads the full volume in its place.

    >>> shrink_factors((512, 512, 300), 4 * 1024 * 1024)
    [4, 4, 2]
    >>> shrink_factors((64, 64, 40), 4 * 1024 * 1024)
    [1, 1, 1]
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PREVIEW_VOXELS", "preview_of", "shrink_factors", "write_viewer_nifti"]

PREVIEW_VOXELS = 4 * 1024 * 1024


def shrink_factors(shape: Sequence[int], limit: int = PREVIEW_VOXELS) -> list[int]:
    """Power-of-two shrink factors per axis so that the shrunk volume has at most ``limit`` voxels.

    The axis with the most voxels after the factors so far is halved next, so thin axes (a few slices) keep their
    resolution longest.
    """
    factors = [1] * len(shape)
    while math.prod(math.ceil(n / f) for n, f in zip(shape, factors, strict=True)) > limit:
        sizes = [n / f if n / f >= 2 else 0 for n, f in zip(shape, factors, strict=True)]
        axis = max(range(len(shape)), key=sizes.__getitem__)
        if sizes[axis] == 0:
            break
        factors[axis] *= 2
    return factors


def preview_of(source: Path, target: Path, limit: int = PREVIEW_VOXELS) -> tuple[Path, list[int] | None]:
    """The preview of the 3D scalar NIfTI ``source``, written to ``target`` (atomically) unless it is there.

    Returns:
        ``(file, factors)``: the preview and the shrink factor of each axis, or ``(source, None)`` when the volume
        needs no preview (at most ``limit`` voxels, or not a 3D single-channel image).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(source))
    reader.ReadImageInformation()
    shape = reader.GetSize()
    if len(shape) != 3 or reader.GetNumberOfComponents() != 1 or math.prod(shape) <= limit:
        return source, None
    factors = shrink_factors(shape, limit)
    if not target.is_file():
        small = sitk.BinShrink(reader.Execute(), factors)
        _atomically(target, lambda partial: sitk.WriteImage(small, str(partial), True))
    return target, factors


def _atomically(target: Path, write: Callable[[Path], None]) -> None:
    """``write`` a file beside ``target``, then rename it into place (no reader sees half a file)."""
    partial = target.with_name(f".{uuid.uuid4().hex}{''.join(target.suffixes)}")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_viewer_nifti(image: Any, target: Path) -> Path:
    """Write a series image as the viewer's ``.nii.gz`` (atomically): RGB24 for 3-channel 8-bit pictures.

    The geometry is the one :func:`deepmia.io.write_image` writes (the colour NIfTI copies its affine and codes).
    """
    import nibabel as nib
    import numpy as np

    from deepmia.io import write_image

    def write(partial: Path) -> None:
        write_image(image, partial)
        if image.array.shape[0] == 3 and image.array.dtype == np.uint8:
            plain = nib.load(partial)
            data = np.asarray(plain.dataobj)  # x, y, z, channel
            rgb = np.empty(data.shape[:3], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
            for k, name in enumerate("RGB"):
                rgb[name] = data[..., k]
            colour = nib.Nifti1Image(rgb, plain.affine)
            colour.set_qform(*plain.get_qform(coded=True))
            colour.set_sform(*plain.get_sform(coded=True))
            colour.header.set_xyzt_units(*plain.header.get_xyzt_units())
            nib.save(colour, partial)

    _atomically(target, write)
    return target
