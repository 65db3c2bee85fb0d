"""Siemens mosaic images: one DICOM image holding every slice of a volume as tiles (fMRI, DTI).

The number of tiles comes from the CSA image header (NumberOfImagesInMosaic) or, in anonymised files that keep
only the series header, from the protocol (``sSliceArray.lSize`` in the ASCCONV block of MrPhoenixProtocol).
The slice step comes from SpacingBetweenSlices, or from the first two slice positions in the protocol.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from deepmia.errors import GeometryError

__all__ = ["is_mosaic", "mosaic_layout", "unmosaic"]


def is_mosaic(ds: Any) -> bool:
    """Whether ``ds`` is a Siemens mosaic (ImageType contains MOSAIC)."""
    return "MOSAIC" in [str(v).upper() for v in ds.get("ImageType", [])]


def _csa(ds: Any, element: int) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    raw = ds.get((0x0029, element))
    if raw is None:
        return {}
    try:
        return csareader.read(raw.value).get("tags", {})
    except Exception:  # a damaged private header is treated as absent
        return {}


def _csa_value(tags: dict[str, Any], name: str) -> Any:
    items = tags.get(name, {}).get("items") or []
    return items if len(items) > 1 else (items[0] if items else None)


def _ascconv(tags: dict[str, Any]) -> dict[str, str]:
    text = _csa_value(tags, "MrPhoenixProtocol")
    if not isinstance(text, str):
        return {}
    start, end = text.find("### ASCCONV BEGIN"), text.find("### ASCCONV END")
    if start < 0 or end < 0:
        return {}
    out = {}
    for line in text[start:end].splitlines():
        m = re.match(r"\s*([\w.\[\]]+)\s*=\s*(\S+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


def _slice_pos(proto: dict[str, str], k: int) -> np.ndarray | None:
    keys = [f"sSliceArray.asSlice[{k}].sPosition.d{a}" for a in ("Sag", "Cor", "Tra")]
    if not any(key in proto for key in keys):
        return None
    return np.array([float(proto.get(key, 0.0)) for key in keys])


def mosaic_layout(ds: Any, *, path: Any = None) -> dict[str, Any]:
    """Tile count, tile size, slice step vector (LPS) and corrected first-slice position of a mosaic.

    Raises:
        GeometryError: The Siemens headers do not say how many tiles there are or how far apart they lie.
    """
    image_tags = _csa(ds, 0x1010)
    proto = _ascconv(_csa(ds, 0x1020))
    n = _csa_value(image_tags, "NumberOfImagesInMosaic")
    if n is None and "sSliceArray.lSize" in proto:
        n = int(proto["sSliceArray.lSize"])
    if not n:
        raise GeometryError(
            "Siemens mosaic without NumberOfImagesInMosaic or protocol slice count; the tiles cannot be found",
            path=path,
        )
    n = int(n)
    grid = math.ceil(math.sqrt(n))
    rows, cols = int(ds.Rows) // grid, int(ds.Columns) // grid
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    # Tiles run along the CSA SliceNormalVector; without it, along the normal, reversed when the protocol
    # says the image numbering is reversed (sSliceArray.ucImageNumbSag/Cor/Tra), as dcm2niix and dicm2nii do.
    sign_src = _csa_value(image_tags, "SliceNormalVector")
    if isinstance(sign_src, list) and len(sign_src) == 3:
        if np.dot(np.array(sign_src, float), normal) < 0:
            normal = -normal
    elif any(int(proto.get(f"sSliceArray.ucImageNumb{a}", "0"), 0) for a in ("Sag", "Cor", "Tra")):
        normal = -normal
    spacing = ds.get("SpacingBetweenSlices")
    p0, p1 = _slice_pos(proto, 0), _slice_pos(proto, 1)
    if spacing is not None:
        step = normal * float(spacing)
    elif p0 is not None and p1 is not None:
        step = normal * abs(float((p1 - p0) @ normal))
    elif n == 1:
        step = normal * float(ds.get("SliceThickness") or 1.0)
    else:
        raise GeometryError(
            "Siemens mosaic without SpacingBetweenSlices or protocol slice positions; the slice step is unknown",
            path=path,
        )
    ps = [float(v) for v in ds.PixelSpacing]
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    # ImagePositionPatient is the corner of the whole mosaic; move it to the corner of one centred tile.
    first = ipp + row * ps[1] * (int(ds.Columns) - cols) / 2 + col * ps[0] * (int(ds.Rows) - rows) / 2
    return {"count": n, "grid": grid, "rows": rows, "columns": cols, "step": step, "position": first}


def unmosaic(pixels: np.ndarray, layout: dict[str, Any]) -> np.ndarray:
    """Cut a mosaic ``(rows, cols)`` into its tiles ``(count, tile_rows, tile_cols)`` in slice order."""
    r, c, g, n = layout["rows"], layout["columns"], layout["grid"], layout["count"]
    tiles = pixels[: g * r, : g * c].reshape(g, r, g, c).transpose(0, 2, 1, 3).reshape(g * g, r, c)
    return tiles[:n]
