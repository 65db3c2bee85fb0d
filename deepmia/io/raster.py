"""PNG, JPEG, TIFF and GIF: 2D pictures and TIFF stacks (GIF is read-only).

Axis convention (the one ITK uses for 2D files): the array is ``(C, X, Y)`` where ``X`` is the column index
(left to right, the picture's width) and ``Y`` the row index (top to bottom, its height); ``array[c, x, y]``
is ``picture[y, x, c]``. Writing an image shows ``X`` across and ``Y`` down, so a picture read and written
back is pixel-identical and upright. Multi-page TIFF files and TIFF stacks are volumes ``(C, X, Y, Z)`` with
one page per ``Z``.

Geometry: like ITK, pixel ``(0, 0)`` sits at the origin with LPS-identity directions, so the RAS+ affine is
``diag(-sx, -sy, sz, 1)``.

Spacing rule: a raster file's spacing is *unknown* (``meta["spacing_unknown"] = True``, read by
:func:`deepmia.io.spacing_known`, with a 1.0 placeholder) unless the file states a calibrated pixel size:

- TIFF with ImageJ calibration (a ``unit`` such as ``um``/``mm``, with the resolution tags and ``spacing``
  in that unit) or OME-XML ``PhysicalSizeX/Y/Z``: written by microscopy and image-analysis software that
  calibrates them;
- a PNG or TIFF written by deepmia from an image whose spacing was known (its stored metadata says so).

A PNG ``pHYs``, a JPEG JFIF density or a plain TIFF ``XResolution``/``ResolutionUnit`` is a print or scan
resolution (72, 96, 300 dpi written by default by most software; 25 dpi on CHASE_DB1's fundus photos), not
the size of a sensor pixel or a physical spacing in the patient, so it is never taken as one. DICOM states
its spacing itself (``PixelSpacing``). Files written by deepmia also carry the full affine and the image
kind (a PNG ``tEXt`` chunk, TIFF JSON metadata), so they round-trip exactly; JPEG keeps neither (its spacing
is read back as unknown), and its pixels are lossy: deepmia writes label maps as PNG, never JPEG.

Pixel types are kept: 16-bit PNG/TIFF stay uint16 (16-bit colour PNGs go through OpenCV because Pillow
reduces them to 8 bits), float TIFF stays float. RGB gives 3 channels, RGBA 4, grey+alpha 2, palette
images are expanded to RGB (RGBA with transparency), CMYK JPEG to RGB, 1-bit images to bool. A JPEG's EXIF
orientation tag is not applied: pixels are used as stored (``meta["exif_orientation"]`` records a tag other than 1).
GIF files (single frame) are palette pictures: a palette of greys gives one channel, any other palette RGB
(RGBA with a transparent colour); an animated GIF is refused rather than reduced to its first frame.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, DeepmiaError, MissingCodecError, UnsupportedFormatError, WriteError
from deepmia.image import LPS_TO_RAS, Image, Kind
from deepmia.io import Format, register_format, spacing_known
from deepmia.io._common import KIND_KEY, build_image

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_KEY = "deepmia"
_KNOWN_KEY = "spacing_known"  # in deepmia's stored metadata: the written image's spacing was physical
_MM_PER_UNIT = {"inch": 25.4, "centimeter": 10.0, "cm": 10.0, "mm": 1.0, "millimeter": 1.0, "meter": 1000.0,
                "m": 1000.0, "micron": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "\\u00b5m": 1e-3,
                "nm": 1e-6}


# ----------------------------------------------------------------------------------------------- geometry
def _default_affine(spacing: tuple[float, ...]) -> np.ndarray:
    """ITK's geometry for a raster file: origin 0, LPS-identity directions, expressed in RAS+."""
    sp = [1.0, 1.0, 1.0]
    sp[: len(spacing)] = [float(s) for s in spacing]
    return LPS_TO_RAS @ np.diag(sp + [1.0])


def _spacing_mm(resolution: float | None, mm_per_unit: float | None) -> float | None:
    """Pixel spacing in mm from pixels per unit; None when the file gives no usable resolution."""
    if not resolution or not mm_per_unit or not np.isfinite(resolution) or resolution <= 0:
        return None
    return mm_per_unit / resolution


def _stored(meta: dict[str, Any] | None, spacing: list[float | None] | None,
            shape_nd: int) -> tuple[np.ndarray, str | None, bool]:
    """Affine, kind and whether the spacing is known (see the module's spacing rule).

    Those deepmia stored in the file if present (and of the right dimension; files written before deepmia
    stored ``spacing_known`` count as unknown), else the default affine on the calibrated ``spacing`` (None, or
    any axis None: unknown, 1.0 placeholders).
    """
    if meta and "affine" in meta:
        affine = np.asarray(meta["affine"], dtype=float)
        if affine.shape == (4, 4) and int(meta.get("spatial_dims", shape_nd)) == shape_nd:
            return affine, meta.get(KIND_KEY), bool(meta.get(_KNOWN_KEY, False))
    known = spacing is not None and all(s is not None for s in spacing)
    placeholder = [float(s) if known and s is not None else 1.0 for s in (spacing or [None] * shape_nd)]
    return _default_affine(tuple(placeholder)), (meta or {}).get(KIND_KEY), known


def _build(arr_hw_c: np.ndarray, path: Path, kind: Kind | None, affine: np.ndarray, file_kind: str | None,
           fmt: str, *, known: bool = False) -> Image:
    """``([Z,] Y, X, C)`` pixels to an Image ``(C, X, Y[, Z])``; ``known`` False flags ``meta["spacing_unknown"]``."""
    nd = arr_hw_c.ndim - 1
    order = (nd, 1, 0) if nd == 2 else (nd, 2, 1, 0)
    meta: dict[str, Any] = {"format": fmt} if known else {"format": fmt, "spacing_unknown": True}
    return build_image(np.transpose(arr_hw_c, order), affine, kind=kind, file_kind=file_kind, meta=meta, path=path)


def _to_picture(image: Image) -> np.ndarray:
    """Image ``(C, X, Y[, Z])`` to ``([Z,] Y, X, C)`` pixels."""
    nd = image.spatial_dims
    return np.ascontiguousarray(np.transpose(image.array, (2, 1, 0) if nd == 2 else (3, 2, 1, 0)))


def _stored_meta(image: Image) -> dict[str, Any]:
    return {"affine": np.asarray(image.affine).tolist(), "spatial_dims": image.spatial_dims, KIND_KEY: image.kind,
            _KNOWN_KEY: spacing_known(image)}


# ------------------------------------------------------------------------------------------------- checks
def _check_2d(image: Image, path: Path, fmt: str) -> None:
    if image.spatial_dims != 2:
        raise WriteError(
            f"{fmt} holds 2D pictures, not a {image.spatial_dims}D volume of shape {image.spatial_shape}",
            path=path, fix="write .tif (one page per slice), .nii.gz, .nrrd or .mha, or extract a slice first",
        )


def _check_channels(image: Image, path: Path, fmt: str, allowed: tuple[int, ...]) -> None:
    if image.num_channels not in allowed:
        raise WriteError(
            f"{fmt} cannot hold {image.num_channels} channels (allowed: {', '.join(map(str, allowed))})",
            path=path, fix="write .tif, .nii.gz, .nrrd or .mha, or select channels first",
        )


def _integral_as(image: Image, path: Path, fmt: str, dtypes: tuple[type, ...]) -> np.ndarray:
    """Pixels in one of ``dtypes``: kept as they are, or, for label images, losslessly narrowed. Else refused."""
    arr = image.array
    if arr.dtype == bool or arr.dtype in [np.dtype(d) for d in dtypes]:
        return arr
    if image.kind == "label" and np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
        for d in dtypes:
            info = np.iinfo(d)
            if info.min <= lo and hi <= info.max:
                return arr.astype(d)
    names = "/".join(np.dtype(d).name for d in dtypes)
    raise WriteError(
        f"{fmt} stores {names} pixels, not {arr.dtype}",
        path=path,
        fix=f"convert explicitly (e.g. image.with_array(image.array.astype(np.{np.dtype(dtypes[-1]).name}))) "
        "after choosing how to rescale, or write .tif/.nii.gz which keep the type",
    )


# ---------------------------------------------------------------------------------------------------- PNG
def _png_chunks(path: Path) -> dict[bytes, list[bytes]]:
    """The PNG's small metadata chunks (IHDR, pHYs, tEXt), checking the signature and chunk structure."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise CorruptFileError("not a PNG file (the PNG signature is missing)", path=path)
    chunks: dict[bytes, list[bytes]] = {}
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise CorruptFileError(f"truncated PNG: chunk {ctype!r} runs past the end of the file", path=path)
        if ctype in (b"IHDR", b"pHYs", b"tEXt"):
            chunks.setdefault(ctype, []).append(data[pos + 8 : pos + 8 + length])
        if ctype == b"IEND":
            break
        pos = end
    else:
        raise CorruptFileError("truncated PNG: no IEND chunk", path=path)
    if b"IHDR" not in chunks or len(chunks[b"IHDR"][0]) != 13:
        raise CorruptFileError("PNG without a valid IHDR header", path=path)
    return chunks


def _png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def read_png(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a PNG file into ``(C, X, Y)``; ``kind`` None follows the file (deepmia's metadata), else intensity.

    Raises:
        CorruptFileError: The file is damaged, truncated or not a PNG file.
    """
    chunks = _png_chunks(path)
    _, _, bit_depth, color_type = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    if bit_depth == 16 and color_type in (2, 4, 6):  # 16-bit colour: Pillow would reduce it to 8 bits
        import cv2

        raw = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise CorruptFileError("OpenCV could not decode this 16-bit PNG", path=path)
        pixels = raw[..., [0, 3]] if color_type == 4 else raw[..., [2, 1, 0, 3][: raw.shape[-1]]]
    else:
        pixels, _ = _pillow_pixels(path, "PNG")
    stored = None  # pHYs is a print resolution (often 72 or 96 dpi), never a pixel spacing
    for text in chunks.get(b"tEXt", []):
        key, _, value = text.partition(b"\x00")
        if key == _TEXT_KEY.encode():
            try:
                stored = json.loads(value.decode("latin-1"))
            except ValueError as exc:
                raise CorruptFileError(f"damaged deepmia metadata in the PNG: {exc}", path=path) from exc
    affine, file_kind, known = _stored(stored, None, 2)
    return _build(pixels, path, kind, affine, file_kind, "png", known=known)


def write_png(image: Image, path: Path, **_: Any) -> None:
    """Write a 2D uint8/uint16/bool image with 1-4 channels, with its affine, kind and spacing status (tEXt).

    A known spacing is also written as ``pHYs`` for other readers.

    Raises:
        WriteError: A volume, a float or signed image (label images are narrowed when lossless), or more than
            4 channels.
    """
    _check_2d(image, path, "PNG")
    _check_channels(image, path, "PNG", (1, 2, 3, 4))
    arr = _integral_as(image, path, "PNG", (np.uint8, np.uint16))
    pic = _to_picture(image.with_array(arr))
    if pic.dtype == np.uint16 and pic.shape[-1] in (3, 4):
        import cv2

        ok, encoded = cv2.imencode(".png", pic[..., [2, 1, 0, 3][: pic.shape[-1]]])
        if not ok:
            raise WriteError("OpenCV could not encode the 16-bit colour PNG", path=path)
        blob = encoded.tobytes()
    elif pic.dtype == np.uint16 and pic.shape[-1] == 2:
        raise WriteError("PNG writers here cannot store 16-bit grey+alpha", path=path,
                         fix="write the two channels as separate PNGs, or write .tif")
    else:
        blob = _pillow_encode(pic, "PNG")
    sx, sy = image.spacing
    meta = [_png_chunk(b"tEXt", _TEXT_KEY.encode() + b"\x00" + json.dumps(_stored_meta(image)).encode("latin-1"))]
    if spacing_known(image):
        meta.insert(0, _png_chunk(b"pHYs", struct.pack(">IIB", round(1000.0 / sx), round(1000.0 / sy), 1)))
    ihdr_end = len(_PNG_SIGNATURE) + 25
    body = b"".join(c for c in _split_chunks(blob[ihdr_end:]) if c[4:8] not in (b"pHYs", b"tEXt"))
    path.write_bytes(blob[:ihdr_end] + b"".join(meta) + body)


def _split_chunks(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos : pos + 12 + length])
        pos += 12 + length
    return out


# ---------------------------------------------------------------------------------------- Pillow helpers
def _pillow_pixels(path: Path, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels ``(Y, X, C)`` decoded by Pillow, keeping bit depth (palette -> RGB(A), CMYK -> RGB), and its info.

    The info is Pillow's ``info`` dict plus ``exif_orientation`` (EXIF tag 0x0112, or None).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as pic:
            if pic.format != fmt:
                raise CorruptFileError(f"not a {fmt} file (its content is {pic.format})", path=path)
            info = {**pic.info, "exif_orientation": pic.getexif().get(0x0112) if fmt == "JPEG" else None}
            if fmt == "GIF":
                pic = _gif_frame(pic, path)
            if pic.mode == "P":
                pic = pic.convert("RGBA" if "transparency" in pic.info else "RGB")
            elif pic.mode in ("CMYK", "YCbCr"):
                pic = pic.convert("RGB")
            elif pic.mode == "PA":
                pic = pic.convert("RGBA")
            pixels = np.asarray(pic)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DeepmiaError):
            raise
        raise CorruptFileError(f"not a readable {fmt} file: {exc}", path=path) from exc
    return (pixels[..., None] if pixels.ndim == 2 else pixels), info


def _gif_frame(pic: Any, path: Path) -> Any:
    """A GIF's only frame; a palette of greys (without transparency) becomes one grey channel."""
    frames = getattr(pic, "n_frames", 1)
    if frames > 1:
        raise UnsupportedFormatError(
            f"animated GIF with {frames} frames", path=path, fix="save the frames you need as separate files (e.g. PNG)"
        )
    if pic.mode == "P" and "transparency" not in pic.info:
        palette = np.asarray(pic.getpalette() or [0, 0, 0], dtype=np.uint8).reshape(-1, 3)
        used = palette[np.unique(np.asarray(pic)).clip(0, len(palette) - 1)]
        if (used == used[:, :1]).all():
            return pic.convert("L")
    return pic


def _pillow_encode(pic: np.ndarray, fmt: str, **options: Any) -> bytes:
    """Encode ``(Y, X, C)`` pixels with Pillow."""
    from PIL import Image as PILImage

    c = pic.shape[-1]
    if pic.dtype == bool:
        src = PILImage.fromarray(pic[..., 0]) if c == 1 else PILImage.fromarray(pic.astype(np.uint8) * 255)
    elif pic.dtype == np.uint16:
        src = PILImage.fromarray(pic[..., 0]) if c == 1 else None  # Pillow picks mode I;16
    else:
        src = PILImage.fromarray(pic[..., 0] if c == 1 else pic)  # L, LA, RGB or RGBA from the shape
    if src is None:
        raise ValueError(f"cannot encode {c}-channel {pic.dtype} pixels")
    buffer = io.BytesIO()
    src.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------- JPEG
def read_jpeg(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a JPEG file into ``(C, X, Y)`` (pixels as stored; the EXIF orientation is recorded, not applied).

    Its spacing is unknown: a JFIF density is a print resolution (see the module's spacing rule).

    Raises:
        CorruptFileError: The file is damaged, truncated or not a JPEG file.
    """
    pixels, info = _pillow_pixels(path, "JPEG")
    orientation = info["exif_orientation"]
    image = _build(pixels, path, kind, _default_affine((1.0, 1.0)), None, "jpeg")
    if orientation not in (None, 1):
        image.meta["exif_orientation"] = int(orientation)
    return image


def write_jpeg(image: Image, path: Path, *, quality: int = 95, **_: Any) -> None:
    """JPEG is lossy: pixels change slightly (``quality`` 1-100); never used for label maps.

    A known spacing is written as dpi for other readers, but deepmia reads every JPEG's spacing as unknown.
    """
    _check_2d(image, path, "JPEG")
    _check_channels(image, path, "JPEG", (1, 3))
    arr = _integral_as(image, path, "JPEG", (np.uint8,))
    pic = _to_picture(image.with_array(arr.astype(np.uint8)))
    sx, sy = image.spacing
    options = {"dpi": (25.4 / sx, 25.4 / sy)} if spacing_known(image) else {}
    path.write_bytes(_pillow_encode(pic, "JPEG", quality=quality, **options))


# --------------------------------------------------------------------------------------------------- TIFF
def _tiff_axes(axes: str, shape: tuple[int, ...], path: Path) -> tuple[tuple[int, ...], int, bool]:
    """How to lay out a tifffile series as ``([Z,] Y, X[, C], singletons...)``.

    Returns the axis permutation, the number of leading axes to keep, and whether the series is a volume.
    """
    spatial = [a for a in axes if a not in "YXSC"]
    extra = [a for a in spatial if shape[axes.index(a)] > 1]
    if len(extra) > 1 or ("S" in axes and "C" in axes and shape[axes.index("C")] > 1):
        raise UnsupportedFormatError(
            f"TIFF with axes {axes!r} and shape {shape} has more than one non-spatial axis", path=path,
            fix="split it into one file per time point or channel first (e.g. with tifffile)",
        )
    z = extra[0] if extra else None
    chan = "S" if "S" in axes else ("C" if "C" in axes else None)
    order = ([axes.index(z)] if z else []) + [axes.index("Y"), axes.index("X")] + ([axes.index(chan)] if chan else [])
    squeeze = [i for i, a in enumerate(axes) if i not in order]
    return tuple(order + squeeze), len(order), z is not None


def read_tiff(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a TIFF file into ``(C, X, Y)``, or a multi-page one into ``(C, X, Y, Z)``; ``kind`` None follows the file.

    Raises:
        CorruptFileError: The file is damaged, truncated or not a TIFF file.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            resolution = getattr(page, "resolution", (0.0, 0.0))
            imagej = tif.imagej_metadata or {}
            ome = tif.ome_metadata if tif.is_ome else None
            shaped = tif.shaped_metadata[0] if tif.is_shaped and tif.shaped_metadata else None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as exc:
        if "requires the 'imagecodecs' package" in str(exc):
            raise MissingCodecError(
                f"this TIFF's compression needs a decoder that is not installed ({exc})",
                path=path, fix="pip install imagecodecs",
            ) from exc
        raise CorruptFileError(f"not a readable TIFF file: {exc}", path=path) from exc
    order, keep, volume = _tiff_axes(axes, data.shape, path)
    pixels = np.transpose(data, order).reshape([data.shape[i] for i in order[:keep]])
    if pixels.ndim == (3 if volume else 2):
        pixels = pixels[..., None]
    spacing = _tiff_calibration(resolution, imagej, ome, volume)
    affine, file_kind, known = _stored(shaped, spacing, 3 if volume else 2)
    return _build(pixels, path, kind, affine, file_kind, "tiff", known=known)


def _tiff_calibration(resolution: tuple[float, float], imagej: dict[str, Any], ome: str | None,
                      volume: bool) -> list[float | None] | None:
    """Calibrated pixel spacing in mm from ImageJ or OME metadata, else None (see the module's spacing rule).

    Plain resolution tags (``XResolution`` in dots per inch or cm) are not a calibration and are ignored.
    """
    if ome:
        return _ome_spacing(ome, volume)
    mm = _MM_PER_UNIT.get(str(imagej.get("unit", "")).lower())
    if not mm:  # no ImageJ calibration ("pixel" or none)
        return None
    spacing = [_spacing_mm(resolution[0], mm), _spacing_mm(resolution[1], mm)]
    if volume:
        z = imagej.get("spacing")
        spacing.append(float(z) * mm if z and float(z) > 0 else None)
    return spacing


def _ome_spacing(xml: str, volume: bool) -> list[float | None] | None:
    """``PhysicalSizeX/Y[/Z]`` of the first OME ``Pixels`` element in mm (unit default: micrometre), else None."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    out: list[float | None] = []
    for axis in "XYZ" if volume else "XY":
        size, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "\u00b5m")
        mm = _MM_PER_UNIT.get(unit.lower())
        try:
            out.append(float(size) * mm if size and mm and float(size) > 0 else None)
        except ValueError:
            out.append(None)
    return out


def write_tiff(image: Image, path: Path, *, compression: str | None = "zlib", **_: Any) -> None:
    """TIFF keeps any dtype and channel count; volumes are written one page per slice, with the affine."""
    import tifffile

    arr = image.array.astype(np.uint8) if image.dtype == bool else image.array
    if arr.dtype == np.float16 or np.iscomplexobj(arr):
        raise WriteError(f"TIFF writing here does not support {arr.dtype}", path=path,
                         fix="convert to float32 first")
    pic = _to_picture(image.with_array(arr))
    c = pic.shape[-1]
    if c == 1:
        pic = pic[..., 0]
    photometric = "rgb" if c in (3, 4) and pic.dtype in (np.uint8, np.uint16) else "minisblack"
    axes = ("ZYX" if image.spatial_dims == 3 else "YX") + ("S" if c > 1 else "")
    sx, sy = image.spacing[:2]
    known = spacing_known(image)  # an unknown spacing's 1.0 placeholder is not written as a resolution (as PNG)
    tifffile.imwrite(
        path, pic, photometric=photometric, planarconfig="contig" if c > 1 else None,
        extrasamples=["unassalpha"] if photometric == "rgb" and c == 4 else None,
        compression=compression, resolution=(10.0 / sx, 10.0 / sy) if known else None,
        resolutionunit="CENTIMETER" if known else None,
        metadata={"axes": axes, **_stored_meta(image)},
    )


# ---------------------------------------------------------------------------------------------------- GIF
def read_gif(path: Path, *, kind: Kind | None = None, **_: Any) -> Image:
    """Read a single-frame GIF file into ``(C, X, Y)``: 1 channel for a grey palette, else 3 (or 4 with transparency).

    Raises:
        CorruptFileError: The file is damaged, truncated or not a GIF file.
        UnsupportedFormatError: An animated GIF (more than one frame).
    """
    pixels, _ = _pillow_pixels(path, "GIF")
    return _build(pixels, path, kind, _default_affine((1.0, 1.0)), None, "gif")


register_format(Format("png", (".png",), read=read_png, write=write_png))
register_format(Format("jpeg", (".jpg", ".jpeg"), read=read_jpeg, write=write_jpeg))
register_format(Format("tiff", (".tif", ".tiff"), read=read_tiff, write=write_tiff))
register_format(Format("gif", (".gif",), read=read_gif))
