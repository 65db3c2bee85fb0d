"""The few header values the reader needs, read once per dataset straight from the raw element bytes.

pydicom converts an element on first access through its hooks machinery (about 20 microseconds each) and every
attribute access goes through ``Dataset.__getattr__``; for a series of small files that costs more than parsing
them. :func:`header_values` reads each needed element once with :meth:`pydicom.dataset.Dataset.get_item` (which
returns the raw element, unconverted) and decodes the common value representations (IS, DS, CS, US, UI) itself.
Anything unusual (another VR than the dictionary's, big endian, a converted or deferred element, an unparsable
value) falls back to pydicom's own conversion, so the values are the same as ``ds.get(keyword)`` would give.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["header_values"]

# keyword -> (tag, dictionary VR). Only top-level elements the series reader uses.
_ELEMENTS: dict[str, tuple[int, str]] = {
    "ImageType": (0x00080008, "CS"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "TemporalPositionIdentifier": (0x00200100, "IS"),
    "SliceThickness": (0x00180050, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
}

_NUMBER_VRS = {"IS": int, "DS": float}
_TAGGED: dict[str, tuple[Any, str]] = {}


def _elements() -> dict[str, tuple[Any, str]]:
    """``_ELEMENTS`` with pydicom tag objects (so that lookups skip the tag conversion)."""
    if not _TAGGED:
        from pydicom.tag import BaseTag

        _TAGGED.update({k: (BaseTag(t), vr) for k, (t, vr) in _ELEMENTS.items()})
    return _TAGGED


def _parse_raw(raw: Any, vr: str) -> tuple[bool, Any]:
    """Decode a raw element's bytes for ``vr``; (False, None) when the fast path does not apply."""
    value = raw.value
    if not isinstance(value, bytes) or (raw.VR is not None and raw.VR != vr):
        return False, None
    if vr == "US":
        if not raw.is_little_endian or len(value) % 2:
            return False, None
        if not value:
            return True, None
        items = struct.unpack(f"<{len(value) // 2}H", value)
        return True, items[0] if len(items) == 1 else list(items)
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False, None
    text = text.strip(" \x00")
    if not text:
        return True, None
    parts = text.split("\\")  # as pydicom: only the whole value is stripped
    convert = _NUMBER_VRS.get(vr)
    if convert is not None:
        try:
            values = [convert(t) for t in parts]
        except ValueError:
            return False, None  # e.g. "1.0" in an IS, or a damaged value: let pydicom decide
    else:
        values = parts
    return True, values[0] if len(values) == 1 else values


def _plain(value: Any, *, top: bool = True) -> Any:
    """A pydicom value as plain Python (None for an empty value, lists for multiple values)."""
    if value is None or (top and value == ""):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v, top=False) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def header_values(ds: Any) -> dict[str, Any]:
    """The top-level values the reader uses, as plain Python: int/float/str, a list when multi-valued.

    Missing or empty elements are None. Values equal what pydicom's conversion gives (it is used whenever the
    raw bytes are not plainly one of IS, DS, CS, US, UI in little endian).
    """
    out: dict[str, Any] = {}
    for keyword, (tag, vr) in _elements().items():
        raw = ds.get_item(tag)
        if raw is None:
            out[keyword] = None
            continue
        if getattr(raw, "is_raw", False):
            ok, value = _parse_raw(raw, vr)
            if ok:
                out[keyword] = value
                continue
        out[keyword] = _plain(ds[tag].value)
    return out
