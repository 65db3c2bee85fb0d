"""Conversion between :class:`Image` and SimpleITK images: the one place where ITK's LPS meets our RAS+.

SimpleITK arrays are indexed ``[z, y, x]`` with vector components last; ours are ``[c, x, y, z]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepmia.image import LPS_TO_RAS, Image, Kind


def _sitk():
    import SimpleITK as sitk

    return sitk


def to_sitk(image: Image, channel: int | None = None) -> Any:
    """Convert to a SimpleITK image (a vector image when there are several channels and ``channel`` is None)."""
    sitk = _sitk()
    arr = image.array if channel is None else image.array[channel : channel + 1]
    nd = image.spatial_dims
    # (C, X, Y[, Z]) -> ([Z,] Y, X, C)
    moved = np.moveaxis(arr, 0, -1)
    moved = np.transpose(moved, tuple(range(nd - 1, -1, -1)) + (nd,))
    if moved.shape[-1] == 1:
        out = sitk.GetImageFromArray(np.ascontiguousarray(moved[..., 0]), isVector=False)
    else:
        out = sitk.GetImageFromArray(np.ascontiguousarray(moved), isVector=True)
    lps = LPS_TO_RAS @ image.affine
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    out.SetSpacing(tuple(float(s) for s in spacing[:nd]))
    out.SetOrigin(tuple(float(o) for o in lps[:nd, 3]))
    out.SetDirection(tuple(float(v) for v in direction[:nd, :nd].ravel()))
    return out


def from_sitk(sitk_image: Any, *, kind: Kind = "intensity", meta: dict[str, Any] | None = None) -> Image:
    """Convert a SimpleITK image (2D or 3D, scalar or vector) to an :class:`Image`."""
    sitk = _sitk()
    nd = sitk_image.GetDimension()
    arr = sitk.GetArrayFromImage(sitk_image)
    ncomp = sitk_image.GetNumberOfComponentsPerPixel()
    if ncomp == 1:
        arr = arr[..., None]
    # ([Z,] Y, X, C) -> (C, X, Y[, Z])
    arr = np.transpose(arr, tuple(range(nd - 1, -1, -1)) + (nd,))
    arr = np.moveaxis(arr, -1, 0)
    spacing = np.ones(3)
    spacing[:nd] = sitk_image.GetSpacing()
    origin = np.zeros(3)
    origin[:nd] = sitk_image.GetOrigin()
    direction = np.eye(3)
    direction[:nd, :nd] = np.asarray(sitk_image.GetDirection()).reshape(nd, nd)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = origin
    return Image(np.ascontiguousarray(arr), LPS_TO_RAS @ lps, kind=kind, meta=meta)
