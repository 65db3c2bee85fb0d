"""A low-resolution preview of a big volume, drawn by the viewer while the full volume loads (progressive open).

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
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PREVIEW_VOXELS", "preview_of", "shrink_factors"]

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
        partial = target.with_name(f".{uuid.uuid4().hex}{''.join(target.suffixes)}")
        try:
            sitk.WriteImage(small, str(partial), True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target, factors
