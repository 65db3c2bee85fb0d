"""Listing and reading DICOM series: folders of files, and single (multi-frame) files, into :class:`Image`.

Stray files. :func:`list_series` skips files that are not DICOM images and reports them in ``.skipped``.
:func:`read_series` is stricter: a file in the series folder that is not DICOM at all raises a
:class:`~deepmia.errors.SeriesError` naming it (it may be a damaged slice), unless it is an obvious non-image
(DICOMDIR, README, text/JSON/NIfTI sidecars, hidden files); DICOM objects without pixels (structured reports,
presentation states) are skipped. Everything skipped is listed in ``image.meta["skipped"]``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, GeometryError, ReadError, SeriesError
from deepmia.image import Image
from deepmia.io.dicom._header import header_values
from deepmia.io.dicom.geometry import FramePlane, StackGeometry, resample_to_regular, stack_geometry
from deepmia.io.dicom.mosaic import mosaic_layout, unmosaic
from deepmia.io.dicom.pixels import apply_modality_lut, decode_frames, frame_rescale, invert_monochrome1

__all__ = ["SeriesInfo", "SeriesList", "list_series", "read_series", "read_file"]

# Names that are obviously not images and may sit beside a series without making it suspect.
_IGNORED_NAMES = {"dicomdir", "readme", "readme.txt", "readme.md", ".ds_store", "thumbs.db", "license", "version"}
_IGNORED_SUFFIXES = (".txt", ".md", ".json", ".xml", ".csv", ".nii", ".nii.gz", ".bval", ".bvec", ".html", ".pdf")


@dataclass
class SeriesInfo:
    """One DICOM series found by :func:`list_series` (from headers only)."""

    series_uid: str
    study_uid: str | None
    patient_id: str | None
    modality: str | None
    description: str | None
    series_number: int | None
    rows: int | None
    columns: int | None
    num_files: int
    files: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (``deepmia info FOLDER`` prints it)."""
        return {
            "series_uid": self.series_uid,
            "study_uid": self.study_uid,
            "patient_id": self.patient_id,
            "modality": self.modality,
            "description": self.description,
            "series_number": self.series_number,
            "num_files": self.num_files,
            "rows": self.rows,
            "columns": self.columns,
            "folder": str(self.files[0].parent) if self.files else None,
        }


class SeriesList(list):
    """A list of :class:`SeriesInfo` that also records the files it skipped (``skipped``: path, reason)."""

    def __init__(self, items: Iterable[SeriesInfo] = (), skipped: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = list(skipped)


def _dcmread(path: Path, *, header_only: bool) -> Any:
    """Read a DICOM file (with the preamble, else ``force=True`` if it parses as DICOM); None if not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=header_only)
        except InvalidDicomError:
            ds = None
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise CorruptFileError(f"damaged or truncated DICOM file: {exc}".replace("\n", " "), path=path) from exc
        if ds is None:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
            except Exception:
                return None
            # Without a preamble anything parses; demand the elements an image must have.
            if "SOPClassUID" not in ds and not ("Rows" in ds and "Columns" in ds):
                return None
            _ensure_transfer_syntax(ds)
    ends = [w for w in caught if "End of file reached" in str(w.message)]
    if ends:
        raise CorruptFileError(f"truncated DICOM file: {ends[0].message}", path=path)
    return ds


def _ensure_transfer_syntax(ds: Any) -> None:
    """Files without a meta header carry no transfer syntax: record the encoding pydicom detected."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts


def _is_ignorable(path: Path) -> bool:
    name = path.name.lower()
    return name in _IGNORED_NAMES or name.startswith(".") or name.endswith(_IGNORED_SUFFIXES)


def _files_in(folder: Path, recursive: bool) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ReadError("no such folder", path=folder)
    walker = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walker if p.is_file())


def _str(ds: Any, key: str) -> str | None:
    v = ds.get(key)
    return None if v in (None, "") else str(v)


def list_series(folder: str | PathLike[str], *, recursive: bool = True) -> SeriesList:
    """Find the DICOM series under ``folder`` from the file headers (pixels are not read).

    Args:
        folder: A folder (searched recursively by default) or a single file.
        recursive: Also look in sub-folders.

    Returns:
        The series, ordered by study, series number and UID; ``.skipped`` lists files that are not DICOM
        images, with the reason.

    Raises:
        ReadError: The folder does not exist.
    """
    folder = Path(folder)
    groups: dict[str, list[tuple[Path, Any]]] = {}
    skipped: list[tuple[str, str]] = []

    def head(p: Path) -> tuple[Path, Any, str]:
        try:
            ds = _dcmread(p, header_only=True)
        except CorruptFileError as exc:
            return p, None, exc.problem
        return p, ds, "" if ds is not None else "not a DICOM file"

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for p, ds, why in pool.map(head, _files_in(folder, recursive)):
            if ds is None:
                skipped.append((str(p), why))
            elif "SeriesInstanceUID" not in ds or "Rows" not in ds:
                skipped.append((str(p), "DICOM object without an image (no SeriesInstanceUID or Rows)"))
            else:
                groups.setdefault(str(ds.SeriesInstanceUID), []).append((p, ds))
    out = []
    for uid, members in groups.items():
        ds = members[0][1]
        number = ds.get("SeriesNumber")
        out.append(
            SeriesInfo(
                series_uid=uid,
                study_uid=_str(ds, "StudyInstanceUID"),
                patient_id=_str(ds, "PatientID"),
                modality=_str(ds, "Modality"),
                description=_str(ds, "SeriesDescription"),
                series_number=int(number) if number not in (None, "") else None,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                num_files=len(members),
                files=[p for p, _ in members],
            )
        )
    out.sort(key=lambda s: (s.study_uid or "", s.series_number if s.series_number is not None else -1, s.series_uid))
    return SeriesList(out, skipped)


# Read files in threads only when they are big enough for the file reads (which release the GIL) to matter:
# measured on 2 cores, 40 files of 4 KiB read 25% faster one after another, 20 files of 150 KiB 15% faster in threads.
_THREADED_READ_BYTES = 64 * 1024


def _mean_size(files: Sequence[Path]) -> float:
    try:
        return sum(p.stat().st_size for p in files) / len(files)
    except OSError:
        return 0.0  # a missing file is reported by the read itself


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ----------------------------------------------------------------------------- frames of one dataset
def _floats(v: Any) -> np.ndarray | None:
    if v is None or v == "":
        return None
    try:
        return np.array([float(x) for x in v], dtype=float)
    except (TypeError, ValueError):
        return None


def _usable_spacing(ps: np.ndarray | None) -> np.ndarray | None:
    """PixelSpacing when it is two positive finite numbers; None (unknown) when missing, zero or damaged."""
    if ps is None or ps.shape != (2,) or not np.all(np.isfinite(ps)) or not np.all(ps > 0):
        return None
    return ps


def _fg_item(ds: Any, frame: int, seq: str) -> Any:
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_name)
        if not groups:
            continue
        group = groups[frame] if groups_name.startswith("PerFrame") and frame < len(groups) else groups[0]
        s = group.get(seq)
        if s:
            return s[0]
    return None


def _order_key(h: dict[str, Any], frame_item: Any, frame: int) -> tuple[Any, ...]:
    if frame_item is not None:
        fc = frame_item.get("FrameContentSequence")
        if fc:
            dims = fc[0].get("DimensionIndexValues")
            if dims is not None:
                return (0, tuple(int(v) for v in (dims if isinstance(dims, Sequence) else [dims])), frame)
    temporal, inst = h["TemporalPositionIdentifier"], h["InstanceNumber"]
    return (int(temporal) if temporal is not None else 0, int(inst) if inst is not None else 0, frame)


def _diffusion(item: Any) -> dict[str, Any]:
    """b-value (s/mm2) and gradient direction (LPS) of an MR Diffusion item or a dataset; {} when absent."""
    if item is None or item.get("DiffusionBValue") in (None, ""):
        return {}
    grad = item.get("DiffusionGradientDirectionSequence")
    vec = _floats((grad[0] if grad else item).get("DiffusionGradientOrientation"))
    return {"bvalue": float(item.DiffusionBValue), "bvec": vec.tolist() if vec is not None else [0.0, 0.0, 0.0]}


def _record_diffusion(meta: dict[str, Any], planes: list[FramePlane], order: np.ndarray) -> None:
    """Per-channel b-values and gradient directions, when every frame of each channel has the same ones."""
    per_channel = []
    for row in order:
        found = {(pl.extra.get("bvalue"), tuple(pl.extra.get("bvec") or ())) for pl in (planes[i] for i in row)}
        if len(found) != 1 or next(iter(found))[0] is None:
            return
        per_channel.append(next(iter(found)))
    meta["diffusion_bvalues"] = [b for b, _ in per_channel]
    meta["diffusion_directions_lps"] = [list(v) for _, v in per_channel]


def _listed(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _frames_of(ds: Any, path: Path, h: dict[str, Any]) -> tuple[list[FramePlane], dict[str, Any] | None]:
    """The frame planes of one dataset (``h``: its :func:`header_values`), and the mosaic layout if any."""
    rows, cols = int(h["Rows"]), int(h["Columns"])
    n = int(h["NumberOfFrames"] or 1)
    image_type = "\\".join(str(v) for v in _listed(h["ImageType"]))
    src = str(path)
    iop = _floats(h["ImageOrientationPatient"])
    ipp = _floats(h["ImagePositionPatient"])
    ps = _usable_spacing(_floats(h["PixelSpacing"]))
    slice_spacing = h["SpacingBetweenSlices"] or h["SliceThickness"]
    extra = {"slice_spacing": float(slice_spacing) if slice_spacing is not None else None, **_diffusion(ds)}
    series_number = h["SeriesNumber"]
    mosaic = "MOSAIC" in [str(v).upper() for v in _listed(h["ImageType"])]
    if n == 1 and mosaic and iop is not None and ps is not None and ipp is not None:
        lay = mosaic_layout(ds, path=path)
        planes = [
            FramePlane(
                lay["position"] + k * lay["step"], iop, (ps[0], ps[1]), lay["rows"], lay["columns"], src,
                _order_key(h, None, 0), image_type, series_number,
                {"slice_spacing": float(np.linalg.norm(lay["step"]))},
            )
            for k in range(lay["count"])
        ]
        return planes, lay
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        planes = []
        for f in range(n):
            pos = _fg_item(ds, f, "PlanePositionSequence")
            ori = _fg_item(ds, f, "PlaneOrientationSequence")
            meas = _fg_item(ds, f, "PixelMeasuresSequence")
            frame_item = ds.PerFrameFunctionalGroupsSequence[f] if "PerFrameFunctionalGroupsSequence" in ds else None
            fps = _usable_spacing(_floats(meas.get("PixelSpacing"))) if meas is not None else None
            fextra = dict(extra)
            between = meas.get("SpacingBetweenSlices") or meas.get("SliceThickness") if meas is not None else None
            if between:
                fextra["slice_spacing"] = float(between)
            fextra.update(_diffusion(_fg_item(ds, f, "MRDiffusionSequence")))
            planes.append(
                FramePlane(
                    _floats(pos.get("ImagePositionPatient")) if pos is not None else ipp,
                    _floats(ori.get("ImageOrientationPatient")) if ori is not None else iop,
                    tuple(fps) if fps is not None else (tuple(ps) if ps is not None else None),
                    rows, cols, src, _order_key(h, frame_item, f), image_type, series_number, fextra,
                )
            )
        return planes, None
    if n > 1 and ipp is not None and iop is not None and extra["slice_spacing"]:
        # Legacy multi-frame (e.g. NM, old MR): frames are equally spaced along the normal.
        normal = np.cross(iop[:3], iop[3:])
        step = normal / np.linalg.norm(normal) * float(h["SpacingBetweenSlices"] or extra["slice_spacing"])
        return [
            FramePlane(ipp + f * step, iop, tuple(ps) if ps is not None else None, rows, cols, src,
                       _order_key(h, None, f), image_type, series_number, extra)
            for f in range(n)
        ], None
    return [
        FramePlane(ipp if n == 1 else None, iop, tuple(ps) if ps is not None else None, rows, cols, src,
                   _order_key(h, None, f), image_type, series_number, extra)
        for f in range(n)
    ], None


def _photometric(h: dict[str, Any]) -> str:
    return str(h["PhotometricInterpretation"] or "").strip().upper()


def _values_of(
    ds: Any, path: Path, mosaic: dict[str, Any] | None, h: dict[str, Any], inverted: list[float] | None = None
) -> np.ndarray:
    """Decoded modality values of every frame (mosaics cut into tiles), MONOCHROME1 inverted.

    ``inverted`` (when given) receives the per-frame sums ``lo + hi`` of a MONOCHROME1 inversion.
    """
    arr = decode_frames(ds, path=path, header=h)
    n, stored_dtype = arr.shape[0], arr.dtype
    slopes = intercepts = None
    if "ModalityLUTSequence" in ds:
        arr = apply_modality_lut(arr, ds)
    elif "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        pairs = [frame_rescale(ds, f) for f in range(n)]
        slopes, intercepts = [p[0] for p in pairs], [p[1] for p in pairs]
        arr = apply_modality_lut(arr, ds, slopes=slopes, intercepts=intercepts)
    else:  # one rescale for every frame: read it once
        slope = h["RescaleSlope"] if h["RescaleSlope"] is not None else 1.0
        intercept = h["RescaleIntercept"] if h["RescaleIntercept"] is not None else 0.0
        slopes, intercepts = [float(slope)] * n, [float(intercept)] * n
        arr = apply_modality_lut(arr, ds, slopes=slopes, intercepts=intercepts)
    if _photometric(h) == "MONOCHROME1" and arr.ndim == 3:
        arr, sums = invert_monochrome1(arr, ds, slopes=slopes, intercepts=intercepts, stored_dtype=stored_dtype)
        if inverted is not None:
            inverted.extend(sums)
    if mosaic is not None:
        arr = unmosaic(arr[0], mosaic)
    return arr


def _meta_of(ds: Any) -> dict[str, Any]:
    meta = {
        "format": "dicom",
        "modality": _str(ds, "Modality"),
        "patient_id": _str(ds, "PatientID"),
        "study_uid": _str(ds, "StudyInstanceUID"),
        "series_uid": _str(ds, "SeriesInstanceUID"),
        "series_description": _str(ds, "SeriesDescription"),
        "series_number": _str(ds, "SeriesNumber"),
        "study_date": _str(ds, "StudyDate"),
        "manufacturer": _str(ds, "Manufacturer"),
        "sop_class_uid": _str(ds, "SOPClassUID"),
        "photometric_interpretation": _str(ds, "PhotometricInterpretation"),
    }
    return {k: v for k, v in meta.items() if v is not None}


def _record_inversion(meta: dict[str, Any], sums: list[float]) -> None:
    """Record in ``meta`` that MONOCHROME1 values were inverted to MONOCHROME2 semantics, and how."""
    meta["photometric_interpretation"] = "MONOCHROME2"
    meta["inverted_from"] = "MONOCHROME1"
    unique = sorted({int(v) if float(v).is_integer() else float(v) for v in sums})
    total = unique[0] if len(unique) == 1 else unique
    meta["inversion"] = (
        f"x' = {total} - x: MONOCHROME1 (low = white) reflected onto the range its stored values map to "
        "(BitsStored through the rescale or Modality LUT); the same formula undoes it"
    )
    meta["inversion_sum"] = total


def _assemble(
    datasets: list[tuple[Path, Any, dict[str, Any]]], *, where: Path, resample: bool, single_file: bool,
    min_slices: int = 3,
) -> Image:
    """Decode ``datasets`` (one series: file, dataset, its header values) and stack their frames into an Image."""
    planes: list[FramePlane] = []
    owners: list[tuple[int, int]] = []  # (dataset index, frame index) of each plane
    layouts = []
    for d, (p, ds, h) in enumerate(datasets):
        frames, layout = _frames_of(ds, p, h)
        layouts.append(layout)
        planes.extend(frames)
        owners.extend((d, f) for f in range(len(frames)))

    inverted: list[float] = []

    def decode(item: tuple[Path, Any, Any, dict[str, Any]]) -> np.ndarray:
        p, ds, lay, h = item
        return _values_of(ds, p, lay, h, inverted)

    items = [(p, ds, lay, h) for (p, ds, h), lay in zip(datasets, layouts, strict=True)]
    # One after another: the installed decoders (pylibjpeg's openjpeg/libjpeg/jpeg-ls/rle) hold the GIL, so a
    # thread pool only added overhead (20 JPEG 2000 CT slices: 0.47 s in 2 threads, 0.42 s one after another).
    values = [decode(item) for item in items]
    meta = _meta_of(datasets[0][1])
    if inverted:
        _record_inversion(meta, inverted)
    sample = values[0]
    rgb = sample.ndim == 4
    dtype = np.result_type(*[v.dtype for v in values])

    no_geometry = any(pl.position is None or pl.orientation is None or pl.spacing is None for pl in planes)
    if single_file and no_geometry:
        arr = values[0].astype(dtype, copy=False)  # (F, rows, cols[, 3])
        arr = np.moveaxis(arr, -1, 0) if rgb else arr[None]  # (C, F, rows, cols)
        arr = arr.transpose(0, 3, 2, 1)  # (C, X, Y, F)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        ps = planes[0].spacing
        meta["geometry"] = "none: the file has no patient position/orientation; the affine only holds pixel spacing"
        if ps is None:
            meta["spacing_unknown"] = True
            meta["geometry"] = (
                "none: the file has no patient position/orientation and no usable PixelSpacing (missing or zero); "
                "the spacing is unknown and the affine is the identity (1 unit = 1 pixel, not 1 mm)"
            )
        affine = np.diag([ps[1], ps[0], 1.0, 1.0]) if ps is not None else np.eye(4)
        return Image(arr, affine, meta=meta)

    geom: StackGeometry = stack_geometry(planes, where=str(where), min_slices=min_slices)
    n_ch, n_sl = geom.order.shape
    if rgb and n_ch > 1:
        raise SeriesError("colour images repeated at one position (colour plus time) are not supported", path=where)
    rows, cols = planes[0].rows, planes[0].columns
    channels = 3 if rgb else n_ch
    out = np.empty((channels, n_sl, rows, cols), dtype=dtype)
    for c in range(n_ch):
        for z in range(n_sl):
            d, f = owners[geom.order[c, z]]
            frame = values[d][f]
            if rgb:
                out[:, z] = np.moveaxis(frame, -1, 0)
            else:
                out[c, z] = frame
    volume = out.transpose(0, 3, 2, 1)  # (C, X=columns, Y=rows, Z) as a view: no copy
    affine = geom.affine
    # Where each (source) slice lies along the normal, mm: `deepmia quality` measures the spacing's regularity.
    meta["slice_positions"] = [round(float(d), 6) for d in geom.positions]
    _record_diffusion(meta, planes, geom.order)
    if not geom.regular:
        if not resample:
            raise GeometryError(
                f"the slices do not form a regular grid: {geom.problem}",
                path=where,
                fix="pass resample=True (CLI: --resample) to resample onto a regular grid",
            )
        volume, affine = resample_to_regular(volume, geom)
        meta["resampled"] = f"resampled onto a regular grid because of {geom.problem}"
    if n_ch > 1:
        meta["channels"] = "repeated acquisitions at each slice position (time points, directions or echoes)"
    elif rgb:
        meta["channels"] = "RGB"
    return Image(volume, affine, meta=meta)


def _pick_series(
    read: list[tuple[Path, Any, dict[str, Any]]], where: Path, series_uid: str | None
) -> list[tuple[Path, Any, dict[str, Any]]]:
    groups: dict[str, list[tuple[Path, Any, dict[str, Any]]]] = {}
    for item in read:
        uid = item[2]["SeriesInstanceUID"]
        groups.setdefault(str(uid) if uid is not None else "", []).append(item)
    if series_uid is not None:
        if series_uid not in groups:
            raise SeriesError(
                f"no series with SeriesInstanceUID {series_uid}", path=where,
                fix=f"choose one of: {', '.join(groups)}",
            )
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(
            f"{uid} ({m[0][1].get('SeriesDescription', '') or 'no description'}, {len(m)} files)"
            for uid, m in groups.items()
        )
        raise SeriesError(
            f"the folder holds {len(groups)} series: {listing}", path=where,
            fix="pass series_uid= (CLI: --series-uid) to choose one",
        )
    return next(iter(groups.values()))


def read_series(
    folder_or_files: str | PathLike[str] | Sequence[str | PathLike[str]],
    *,
    series_uid: str | None = None,
    resample: bool = False,
) -> Image:
    """Read one DICOM series into an Image (RAS+ affine, channels for repeated positions or colour).

    Args:
        folder_or_files: A folder (searched recursively) or a list of files.
        series_uid: Which series to read when there are several.
        resample: Resample a tilted or unevenly spaced series onto a regular grid (float32). Off by default:
            such a series is refused.

    Raises:
        SeriesError: No series, several series and no ``series_uid``, a stray non-DICOM file, mixed image sizes.
        GeometryError: The slices do not form one trustworthy volume (the message says why).
        MissingCodecError: The pixel data needs a decoder that is not installed.
        CorruptFileError: A file is damaged or truncated.
    """
    if isinstance(folder_or_files, (str, PathLike)):
        where = Path(folder_or_files)
        files = _files_in(where, recursive=True)
    else:
        files = [Path(f) for f in folder_or_files]
        where = files[0].parent if files else Path(".")
    if not files:
        raise SeriesError("no files found: the folder is empty", path=where)

    def full(p: Path) -> tuple[Path, Any]:
        return p, _dcmread(p, header_only=False)

    if len(files) > 1 and _mean_size(files) >= _THREADED_READ_BYTES:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            results = list(pool.map(full, files))
    else:  # parsing small files is pure Python: threads only add overhead under the GIL
        results = [full(p) for p in files]
    images, skipped = [], []
    for p, ds in results:
        if ds is None:
            if _is_ignorable(p):
                skipped.append((str(p), "not a DICOM file"))
                continue
            raise SeriesError(
                f"{p.name} in the series folder is not a DICOM file", path=where,
                fix=f"remove {p} or pass the slice files explicitly",
            )
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            skipped.append((str(p), "DICOM object without pixel data"))
            continue
        images.append((p, ds, header_values(ds)))
    if not images:
        raise SeriesError("no DICOM images found", path=where, fix="check the folder holds DICOM image files")
    chosen = _pick_series(images, where, series_uid)
    image = _assemble(chosen, where=where, resample=resample, single_file=False)
    if skipped:
        image.meta["skipped"] = skipped
    image.meta["num_files"] = len(chosen)
    return image


_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def read_file(path: str | PathLike[str], *, resample: bool = False) -> Image:
    """Read one DICOM file (single- or multi-frame, enhanced or legacy, mosaic) into an Image.

    Raises:
        CorruptFileError: The file is not DICOM, is damaged, or holds no image.
        MissingCodecError: The pixel data needs a decoder that is not installed.
        GeometryError: The frames' geometry is not one regular volume.
    """
    p = Path(path)
    ds = _dcmread(p, header_only=False)
    if ds is None:
        raise CorruptFileError("not a DICOM file (no DICM preamble, and it does not parse as DICOM)", path=p)
    if "Rows" not in ds:
        raise CorruptFileError("the DICOM file holds no image (no Rows/Columns)", path=p)
    try:
        return _assemble([(p, ds, header_values(ds))], where=p, resample=resample, single_file=True, min_slices=2)
    except GeometryError:
        if str(ds.get("SOPClassUID", "")) != _SEG_STORAGE:
            raise
        raise GeometryError(  # frames of empty segments left out: not one regular multi-frame volume
            "a DICOM SEG that leaves out empty frames cannot be read as one volume", path=p,
            fix="read it onto its source series with deepmia.report.dicom.read_seg(seg, source_series)") from None
