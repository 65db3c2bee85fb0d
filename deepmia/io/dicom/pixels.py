"""Decoding DICOM pixel data into values: codecs, the Modality LUT, colour, and the VOI LUT.

Decoding goes through pydicom's pixel backends (NumPy for native data, pylibjpeg, GDCM, pyjpegls), with a
zero-copy :func:`numpy.frombuffer` fast path for uncompressed little-endian monochrome data. When no installed
backend handles a transfer syntax, :class:`~deepmia.errors.MissingCodecError` names it and the package to
install. Values are returned as stored unless a Modality LUT changes them: an identity rescale keeps the integer
dtype (never silently 8-bit or float).
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, MissingCodecError

__all__ = [
    "is_native",
    "decode_frames",
    "apply_modality_lut",
    "apply_voi_lut",
    "frame_rescale",
    "modality_range",
    "invert_monochrome1",
]

# Transfer syntaxes that carry native (uncompressed) little-endian pixel data.
_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"}

# Which package to install for each compressed transfer syntax family.
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.80": "pyjpegls or pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.81": "pyjpegls or pylibjpeg-libjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (or python-gdcm)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (or python-gdcm)",
    "1.2.840.10008.1.2.8.1": "pydicom>=3.1 (Deflated Image Frame Compression is not decoded by pydicom 3.0)",
}


def _transfer_syntax(ds: Any) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")) if meta is not None else "1.2.840.10008.1.2"


def _ts_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def is_native(ds: Any) -> bool:
    """Whether the pixel data of ``ds`` is uncompressed little-endian (decoded by a zero-copy view)."""
    return _transfer_syntax(ds) in _NATIVE_LE


def _pixel_bytes(ds: Any) -> bytes:
    """The PixelData bytes of native little-endian data, without pydicom's element conversion when possible."""
    raw = ds.get_item(0x7FE00010)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes) and getattr(raw, "is_little_endian", True) and raw.VR in (None, "OB", "OW", "OB or OW"):
        return value
    return ds.PixelData


def _fast_native(ds: Any, h: dict[str, Any] | None = None) -> np.ndarray | None:
    """Frames ``(F, rows, cols)`` straight from the bytes of native little-endian monochrome data, else None.

    ``h`` holds the dataset's header values (:func:`deepmia.io.dicom._header.header_values`), read if not given.
    """
    if _transfer_syntax(ds) not in _NATIVE_LE or "PixelData" not in ds:
        return None
    if h is None:
        from deepmia.io.dicom._header import header_values

        h = header_values(ds)
    bits = int(h["BitsAllocated"] or 0)
    if bits not in (8, 16, 32) or int(h["SamplesPerPixel"] or 1) != 1:
        return None
    if str(h["PhotometricInterpretation"] or "") not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    stored = int(h["BitsStored"] or bits)
    signed = h["PixelRepresentation"] == 1
    if stored != bits and signed:
        return None  # sign extension of packed values: let pydicom do it
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols, frames = int(h["Rows"]), int(h["Columns"]), int(h["NumberOfFrames"] or 1)
    raw = _pixel_bytes(ds)
    need = rows * cols * frames * dtype.itemsize
    if len(raw) < need:
        return None  # pydicom raises the precise truncation error
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * frames).reshape(frames, rows, cols)
    if stored != bits:
        arr = arr & np.array((1 << stored) - 1, dtype=dtype)
    return arr


def decode_frames(
    ds: Any, *, path: str | PathLike[str] | None = None, header: dict[str, Any] | None = None
) -> np.ndarray:
    """Decode every frame of ``ds`` into ``(F, rows, cols)`` or ``(F, rows, cols, 3)`` (colour as RGB).

    YBR data is converted to RGB and palette colour is looked up into RGB. Values are stored values: the
    Modality LUT is applied separately (:func:`apply_modality_lut`).

    Args:
        ds: The dataset.
        path: Its file, for error messages.
        header: Its :func:`deepmia.io.dicom._header.header_values`, when the caller already has them.

    Raises:
        MissingCodecError: No installed decoder handles the transfer syntax (names the package to install).
        CorruptFileError: The file has no pixel data, or it is truncated or damaged.
    """
    fast = _fast_native(ds, header)
    if fast is not None:
        return fast
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise CorruptFileError("the DICOM file holds no pixel data (not an image)", path=path)
    from pydicom.pixels import apply_color_lut

    ts = _transfer_syntax(ds)
    try:
        arr = ds.pixel_array
    except NotImplementedError as exc:
        package = _CODEC_PACKAGES.get(ts, "pylibjpeg with its plugins, or python-gdcm")
        raise MissingCodecError(
            f"no installed decoder handles the transfer syntax {_ts_name(ts)}: {exc}".replace("\n", " "),
            path=path,
            fix=f"install {package}",
        ) from exc
    except (ValueError, RuntimeError, AttributeError, KeyError, TypeError, OSError) as exc:
        raise CorruptFileError(
            f"cannot decode the pixel data ({_ts_name(ts)}): {exc}".replace("\n", " "), path=path
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        samples = 3
    arr = np.asarray(arr)
    want = 3 if samples > 1 else 2
    if arr.ndim == want:
        arr = arr[None]
    if arr.shape[0] != frames and frames > 1:
        raise CorruptFileError(f"decoded {arr.shape[0]} frames, header says NumberOfFrames={frames}", path=path)
    return arr


def frame_rescale(ds: Any, frame: int = 0) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept of one frame (from functional groups in enhanced objects)."""
    item = None
    for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(seq)
        if not groups:
            continue
        group = groups[frame] if seq.startswith("PerFrame") and frame < len(groups) else groups[0]
        pvt = group.get("PixelValueTransformationSequence")
        if pvt:
            item = pvt[0]
            break
    source = item if item is not None else ds
    slope = source.get("RescaleSlope", 1.0)
    intercept = source.get("RescaleIntercept", 0.0)
    return float(slope if slope not in (None, "") else 1.0), float(intercept if intercept not in (None, "") else 0.0)


def _integer_dtype_for(lo: float, hi: float) -> np.dtype:
    for dt in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


def _stored_range(ds: Any, dtype: np.dtype) -> tuple[int, int]:
    """Range of stored values from BitsStored and PixelRepresentation (else the dtype's range)."""
    info = np.iinfo(dtype)
    bits = ds.get("BitsStored")
    if not bits:
        return int(info.min), int(info.max)
    bits = int(bits)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return max(-(1 << (bits - 1)), int(info.min)), min((1 << (bits - 1)) - 1, int(info.max))
    return 0, min((1 << bits) - 1, int(info.max))


def apply_modality_lut(arr: np.ndarray, ds: Any, *, slopes: Any = None, intercepts: Any = None) -> np.ndarray:
    """Stored values -> modality values (e.g. CT Hounsfield units) for frames ``(F, rows, cols)``.

    Uses the Modality LUT Sequence when present, else RescaleSlope/RescaleIntercept (per frame when given).
    An integral rescale (slope 1, integer intercept) keeps an integer dtype wide enough for the result;
    any other rescale returns float32. Colour data is returned unchanged.

    Args:
        arr: Stored values, frames first.
        ds: The dataset the values came from.
        slopes: Per-frame slopes (default: from the dataset).
        intercepts: Per-frame intercepts (default: from the dataset).
    """
    if arr.ndim == 4 or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return arr
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut as _pd_modality_lut

        return np.asarray(_pd_modality_lut(arr, ds))
    if slopes is None:
        pairs = [frame_rescale(ds, i) for i in range(arr.shape[0])]
        slopes = [p[0] for p in pairs]
        intercepts = [p[1] for p in pairs]
    slopes = np.asarray(slopes, dtype=np.float64)
    intercepts = np.asarray(intercepts, dtype=np.float64)
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return arr
    if np.all(slopes == 1.0) and np.all(intercepts == np.round(intercepts)) and np.issubdtype(arr.dtype, np.integer):
        lo, hi = _stored_range(ds, arr.dtype)
        dt = _integer_dtype_for(lo + intercepts.min(), hi + intercepts.max())
        if np.all(intercepts == intercepts[0]):
            return arr.astype(dt) + dt.type(intercepts[0])
        return arr.astype(dt) + intercepts.astype(dt)[:, None, None]
    shape = (-1,) + (1,) * (arr.ndim - 1)
    return (arr.astype(np.float32) * slopes.astype(np.float32).reshape(shape)) + intercepts.astype(np.float32).reshape(
        shape
    )


def modality_range(ds: Any, dtype: np.dtype, slope: float = 1.0, intercept: float = 0.0) -> tuple[float, float]:
    """The smallest and largest modality value the stored values of ``ds`` can map to.

    The stored range comes from BitsStored and PixelRepresentation (``dtype``'s range when BitsStored is absent);
    a Modality LUT Sequence maps it to the range of its LUT data, a rescale to ``slope * stored + intercept``.

    Args:
        ds: The dataset.
        dtype: The dtype of the decoded stored values.
        slope: RescaleSlope (of the frame).
        intercept: RescaleIntercept (of the frame).
    """
    if "ModalityLUTSequence" in ds:
        lut = ds.ModalityLUTSequence[0]
        bits = int(lut.LUTDescriptor[2])
        data = lut.get("LUTData")
        if data is not None and not isinstance(data, bytes):
            values = np.asarray(data, dtype=np.int64).ravel()
            return float(values.min()), float(values.max())
        return 0.0, float((1 << bits) - 1)
    lo, hi = _stored_range(ds, dtype)
    ends = sorted((slope * lo + intercept, slope * hi + intercept))
    return float(ends[0]), float(ends[1])


def invert_monochrome1(
    arr: np.ndarray, ds: Any, *, slopes: Any = None, intercepts: Any = None, stored_dtype: Any = None
) -> tuple[np.ndarray, list[float]]:
    """MONOCHROME1 modality values -> MONOCHROME2 semantics (low = dark), frame by frame.

    MONOCHROME1 means the lowest value is displayed white. Every viewer inverts it; so does the reader, as
    ``x' = (lo + hi) - x`` where ``[lo, hi]`` is the range the frame's stored values can map to through its
    Modality LUT or rescale (:func:`modality_range`, from BitsStored): the inversion is a reflection of that
    range onto itself, so the values stay in it, the dtype is kept, it does not depend on the image content
    and it is its own inverse (the same formula undoes it). The file's VOI window still describes the stored
    (un-inverted) values: reflect its centre (``(lo + hi) - c``, same width) before applying it to these values.

    Args:
        arr: Modality values ``(F, rows, cols)`` (after :func:`apply_modality_lut`).
        ds: The dataset the values came from.
        slopes: Per-frame RescaleSlope (default 1).
        intercepts: Per-frame RescaleIntercept (default 0).
        stored_dtype: The dtype of the stored values before the Modality LUT (default ``arr.dtype``).

    Returns:
        The inverted values and, per frame, the sum ``lo + hi`` used.
    """
    n = arr.shape[0]
    slopes = [1.0] * n if slopes is None else [float(v) for v in slopes]
    intercepts = [0.0] * n if intercepts is None else [float(v) for v in intercepts]
    stored = np.dtype(stored_dtype if stored_dtype is not None else arr.dtype)
    if np.issubdtype(stored, np.integer):
        sums = [sum(modality_range(ds, stored, s, i)) for s, i in zip(slopes, intercepts, strict=True)]
    else:  # float pixel data has no stored range: reflect each frame's own value range
        sums = [float(f.min()) + float(f.max()) for f in arr]
    if np.issubdtype(arr.dtype, np.integer) and all(float(v).is_integer() for v in sums):
        wide = np.asarray(sums, dtype=np.int64).reshape(-1, 1, 1) - arr.astype(np.int64)
        lo, hi, info = int(wide.min()), int(wide.max()), np.iinfo(arr.dtype)
        return wide.astype(arr.dtype if info.min <= lo and hi <= info.max else _integer_dtype_for(lo, hi)), sums
    out = np.asarray(sums, dtype=np.float64).reshape(-1, 1, 1) - arr
    return out.astype(arr.dtype if arr.dtype == np.float64 else np.float32), sums


def apply_voi_lut(arr: np.ndarray, ds: Any, *, index: int = 0, prefer_lut: bool = True) -> np.ndarray:
    """Apply the VOI LUT (or window centre/width) of ``ds`` to modality values, for display.

    A thin wrapper over :func:`pydicom.pixels.apply_voi_lut`; it is never applied on read, because it
    throws away the quantitative values.

    Args:
        arr: Modality values (after :func:`apply_modality_lut`).
        ds: The dataset holding the VOI LUT Sequence or WindowCenter/WindowWidth.
        index: Which of several VOI transforms to use.
        prefer_lut: Use the VOI LUT Sequence rather than the window when both are present.
    """
    from pydicom.pixels import apply_voi_lut as _pd_voi

    return np.asarray(_pd_voi(arr, ds, index=index, prefer_lut=prefer_lut))
