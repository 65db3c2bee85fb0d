"""Incremental, parallel, kill-safe indexing of a DICOM folder tree into the catalog.

A scan walks the tree, compares each file's size and modification time with the catalog, and parses the header
(never the pixel data) only of new or changed files, in a pool of worker processes. One place, the calling
process, writes to the database, in batches that each commit in one transaction: a scan killed half way leaves a
consistent catalog, and the next scan picks up where it stopped. Files that cannot be indexed (not DICOM,
truncated, unreadable) are recorded in ``scan_errors`` and reported; they never stop the scan, and rows already in
the catalog are kept. Deleted files get ``missing_since`` set.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import multiprocessing
import os
import socket
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepmia._validate import check_range
from deepmia.errors import CatalogError, InvalidArgumentError

from .db import Catalog, _folder_prefix
from .models import Instance, Job, Patient, ScanError, Series, Study

__all__ = ["ScanReport", "read_header", "scan"]

DEFLATED_TS = "1.2.840.10008.1.2.1.99"  # the whole dataset is deflated: byte offsets are not file offsets
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
ITEM, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
MAX_PATH = 1024  # length of the path columns
MIN_FILES_FOR_POOL = 512  # starting worker processes takes about a second: below this it costs more than it saves


@dataclass
class ScanReport:
    """What a scan did.

    Attributes:
        root: The scanned folder (absolute).
        job_id: The ``jobs`` row of this scan.
        files: Files found under ``root``.
        read: Headers parsed by this scan (new or changed files); 0 on a rescan of an unchanged tree.
        added: Images newly indexed.
        updated: Images re-indexed because their file changed (or came back).
        unchanged: Images and known bad files skipped because size and modification time were unchanged.
        missing: Images whose file disappeared (or turned unreadable) in this scan.
        errors: Every recorded problem below ``root`` (``path``, ``kind``, ``problem``), old and new.
        seconds: Wall time of the scan.
    """

    root: str
    job_id: int
    files: int = 0
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    errors: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The counts, without the error list (stored as the job's result)."""
        data = asdict(self)
        data["errors"] = len(self.errors)
        return data


# --------------------------------------------------------------------------------------------------------------
# header parsing (runs in worker processes: no database access here)


def _problem(path: str, kind: str, problem: str) -> dict[str, Any]:
    return {"path": path, "ok": False, "kind": kind, "problem": problem}


def read_header(path: str) -> dict[str, Any]:
    """Parse the header of one DICOM file, without reading its pixel data, and check the file is complete.

    The pixel data element is checked for fitting in the file by reading only its element and item headers
    (a truncated file is reported, although its pixels are never read).

    Args:
        path: The file.

    Returns:
        ``{"ok": True, ...header fields}`` or ``{"ok": False, "kind": ..., "problem": ...}`` where kind is
        ``not_dicom``, ``corrupt``, ``incomplete`` (no study/series/instance UID) or ``unreadable``.
    """
    from pydicom.errors import InvalidDicomError

    if len(path) > MAX_PATH:
        return _problem(path, "unreadable", f"path longer than the catalog's {MAX_PATH} characters")
    try:
        size = os.path.getsize(path)
        fp = open(path, "rb")  # noqa: SIM115 -- closed below; open errors are told apart from parse errors
    except PermissionError as exc:
        return _problem(path, "unreadable", f"permission denied ({exc.strerror})")
    except OSError as exc:
        return _problem(path, "unreadable", f"cannot open: {exc.strerror or exc}")
    try:
        with fp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-conformant values are common; what matters is checked below
            return _parse(fp, path, size)
    except InvalidDicomError as exc:
        return _problem(path, "not_dicom", f"not a DICOM file ({exc})")
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types on damaged files; each is recorded
        return _problem(path, "corrupt", f"damaged DICOM file: {type(exc).__name__}: {exc}")


def _parse(fp, path: str, size: int) -> dict[str, Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    forced = False
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        # No 128-byte preamble + "DICM": still DICOM if a forced read finds the identifying UIDs.
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        forced = True
    meta_length = ds.file_meta.get("FileMetaInformationGroupLength") if ds.file_meta else None
    if not forced and meta_length is not None and 144 + int(meta_length) > size:  # preamble+DICM+group length
        return _problem(path, "corrupt", "file ends inside its file meta information (truncated)")
    missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID") if not ds.get(k)]
    if missing and forced:
        return _problem(path, "not_dicom", "not a DICOM file (no DICM header and no DICOM UIDs)")
    if missing:
        return _problem(path, "incomplete", f"DICOM file without {', '.join(missing)}; cannot be indexed")
    ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta else None
    truncation = None if ts == DEFLATED_TS else _check_pixel_element(fp, ds, size)
    if truncation:
        return _problem(path, "corrupt", truncation)
    fields = _header_fields(ds)
    fields.update(path=path, ok=True, transfer_syntax_uid=None if ts is None else str(ts))
    return fields


def _check_pixel_element(fp, ds, size: int) -> str | None:
    """Check that the pixel data element at ``fp``'s position fits in the file; the problem or ``None``."""
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    endian = "<" if little else ">"
    start = fp.tell()
    head = fp.read(8)
    if not head:
        return None  # no pixel data (e.g. a structured report)
    if len(head) < 8:
        return f"file ends inside the pixel data element header at byte {start} (truncated)"
    group, element = struct.unpack(endian + "HH", head[:4])
    if group != 0x7FE0:
        return None
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:])
    elif head[4:6] in LONG_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            return "file ends inside the pixel data element header (truncated)"
        (length,) = struct.unpack(endian + "I", extra)
    else:
        (length,) = struct.unpack(endian + "H", head[6:])
    data_start = fp.tell()
    if length == 0xFFFFFFFF:
        return _check_fragments(fp, size)
    if data_start + length > size:
        return f"pixel data declares {length} bytes but the file holds {size - data_start} (truncated)"
    needed = _native_pixel_bytes(ds)
    if element == 0x0010 and needed is not None and length < needed:
        return f"pixel data holds {length} bytes; Rows x Columns x Frames x Samples x BitsAllocated needs {needed}"
    return None


def _check_fragments(fp, size: int) -> str | None:
    """Walk the item headers of encapsulated pixel data (seeking over the fragments, never reading them)."""
    while True:
        head = fp.read(8)
        if len(head) < 8:
            return "encapsulated pixel data ends before its sequence delimiter (truncated)"
        group, element, length = struct.unpack("<HHI", head)
        if (group, element) == SEQUENCE_END:
            return None
        if (group, element) != ITEM:
            return f"unexpected tag ({group:04X},{element:04X}) inside encapsulated pixel data at byte {fp.tell() - 8}"
        if fp.tell() + length > size:
            return (f"pixel data fragment at byte {fp.tell() - 8} declares {length} bytes but the file holds "
                    f"{size - fp.tell()} (truncated)")
        fp.seek(length, os.SEEK_CUR)


def _native_pixel_bytes(ds) -> int | None:
    try:
        bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1)
        bits *= int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    return math.ceil(bits / 8)


def _value(ds, keyword: str, kind: Callable = str, *, max_len: int | None = None):
    """One header value converted by ``kind``, ``None`` when absent or empty; a bad value raises ValueError."""
    raw = ds.get(keyword)
    if raw is None or raw == "":
        return None
    try:
        value = [float(v) for v in raw] if kind is list else kind(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{keyword} has an invalid value {raw!r}") from exc
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{keyword} is longer than the {max_len} characters DICOM allows: {value!r}")
    return value


def _dicom_date(text: str) -> date:
    # YYYYMMDD, or the YYYY.MM.DD of ACR-NEMA era files
    return datetime.strptime(str(text).strip().replace(".", "")[:8], "%Y%m%d").date()


def _header_fields(ds) -> dict[str, Any]:
    patient_id, patient_name = _value(ds, "PatientID"), _value(ds, "PatientName")
    birth = _value(ds, "PatientBirthDate")
    position = _value(ds, "ImagePositionPatient", list)
    return {
        # The raw identity never leaves the writer: it is hashed with the catalog's salt before storing.
        "patient_key": (f"id:{patient_id}|{_value(ds, 'IssuerOfPatientID') or ''}" if patient_id
                        else f"name:{patient_name}|{birth or ''}" if patient_name else None),
        "sex": _value(ds, "PatientSex", max_len=16),
        "birth_year": int(str(birth)[:4]) if birth and str(birth)[:4].isdigit() else None,
        "study_uid": _value(ds, "StudyInstanceUID", max_len=64),
        "study_date": _value(ds, "StudyDate", _dicom_date),
        "study_description": _value(ds, "StudyDescription"),
        "series_uid": _value(ds, "SeriesInstanceUID", max_len=64),
        "modality": _value(ds, "Modality", max_len=16),
        "series_number": _value(ds, "SeriesNumber", int),
        "series_description": _value(ds, "SeriesDescription"),
        "body_part": _value(ds, "BodyPartExamined", max_len=64),
        "frame_of_reference_uid": _value(ds, "FrameOfReferenceUID", max_len=64),
        "sop_instance_uid": _value(ds, "SOPInstanceUID", max_len=64),
        "sop_class_uid": _value(ds, "SOPClassUID", max_len=64),
        "instance_number": _value(ds, "InstanceNumber", int),
        "rows": _value(ds, "Rows", int),
        "columns": _value(ds, "Columns", int),
        "frames": _value(ds, "NumberOfFrames", int),
        "position": position if position and len(position) == 3 else None,
        "orientation": _value(ds, "ImageOrientationPatient", list),
        "pixel_spacing": _value(ds, "PixelSpacing", list),
        "slice_thickness": _value(ds, "SliceThickness", float),
    }


# --------------------------------------------------------------------------------------------------------------
# walking


@dataclass
class _Walk:
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns)
    problems: list[dict[str, Any]] = field(default_factory=list)


def _walk(root: Path, skip: set[str]) -> _Walk:
    walk = _Walk()

    def on_error(exc: OSError) -> None:
        walk.problems.append(_problem(str(exc.filename), "unreadable", f"cannot list folder: {exc.strerror}"))

    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if path in skip:
                continue
            try:
                st = os.stat(path)
            except OSError as exc:
                kind = "broken symbolic link" if os.path.islink(path) else f"cannot stat: {exc.strerror}"
                walk.problems.append(_problem(path, "unreadable", kind))
                continue
            if not os.path.isfile(path):
                walk.problems.append(_problem(path, "unreadable", "not a regular file"))
                continue
            walk.files[path] = (st.st_size, st.st_mtime_ns)
    return walk


# --------------------------------------------------------------------------------------------------------------
# writing (the calling process only)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class _Writer:
    """Writes parsed headers and problems to the catalog, one transaction per batch."""

    def __init__(self, catalog: Catalog, report: ScanReport, walk: _Walk, known_images: dict, known_errors: dict):
        self.catalog = catalog
        self.report = report
        self.walk = walk
        self.images = known_images  # path -> Instance id
        self.errors = known_errors  # path -> ScanError id
        self.salt = catalog.salt().encode()
        self.patients: dict[str, int] = {}
        self.studies: dict[str, int] = {}
        self.series: dict[str, int] = {}

    def pseudonym(self, result: dict[str, Any]) -> str:
        key = result["patient_key"] or f"study:{result['study_uid']}"  # no identity: one unknown patient per study
        return hmac.new(self.salt, key.encode(), hashlib.sha256).hexdigest()[:32]

    def _get_or_create(self, s: Session, cache: dict, model, column, key: str, make: Callable[[], Any]) -> int:
        if key not in cache:
            found = s.scalar(select(model.id).where(column == key))
            if found is None:
                row = make()
                s.add(row)
                s.flush()
                found = row.id
            cache[key] = found
        return cache[key]

    def write(self, results: list[dict[str, Any]], *, done: int, total: int) -> None:
        now = _now()
        with self.catalog.session() as s:
            for r in results:
                if r["ok"]:
                    self._write_image(s, r, now)
                else:
                    self._write_problem(s, r, now)
            s.get(Job, self.report.job_id).progress = done / total if total else 1.0

    def _write_image(self, s: Session, r: dict[str, Any], now: datetime) -> None:
        pseudonym = self.pseudonym(r)
        patient_id = self._get_or_create(s, self.patients, Patient, Patient.pseudonym, pseudonym,
                                         lambda: Patient(pseudonym=pseudonym, sex=r["sex"], birth_year=r["birth_year"]))
        study_id = self._get_or_create(s, self.studies, Study, Study.study_uid, r["study_uid"], lambda: Study(
            study_uid=r["study_uid"], patient_id=patient_id, study_date=r["study_date"],
            description=r["study_description"]))
        series_id = self._get_or_create(s, self.series, Series, Series.series_uid, r["series_uid"], lambda: Series(
            series_uid=r["series_uid"], study_id=study_id, modality=r["modality"], series_number=r["series_number"],
            description=r["series_description"], body_part=r["body_part"],
            frame_of_reference_uid=r["frame_of_reference_uid"]))
        size, mtime_ns = self.walk.files[r["path"]]
        position = r["position"] or (None, None, None)
        values = dict(
            path=r["path"], size=size, mtime_ns=mtime_ns, series_id=series_id, sop_instance_uid=r["sop_instance_uid"],
            sop_class_uid=r["sop_class_uid"], transfer_syntax_uid=r["transfer_syntax_uid"],
            instance_number=r["instance_number"], rows=r["rows"], columns=r["columns"], frames=r["frames"],
            position_x=position[0], position_y=position[1], position_z=position[2], orientation=r["orientation"],
            pixel_spacing=r["pixel_spacing"], slice_thickness=r["slice_thickness"], indexed_at=now,
            missing_since=None,
        )
        if _upsert(s, Instance, self.images, values):
            self.report.added += 1
        else:
            self.report.updated += 1
        error_id = self.errors.pop(r["path"], None)
        if error_id is not None:
            s.delete(s.get(ScanError, error_id))

    def _write_problem(self, s: Session, r: dict[str, Any], now: datetime) -> None:
        size, mtime_ns = self.walk.files.get(r["path"], (None, None))
        values = dict(path=r["path"], size=size, mtime_ns=mtime_ns, kind=r["kind"], problem=r["problem"],
                      job_id=self.report.job_id, seen_at=now)
        _upsert(s, ScanError, self.errors, values)
        image_id = self.images.get(r["path"])
        if image_id is not None:  # an indexed file turned bad: keep its row, marked unavailable
            image = s.get(Instance, image_id)
            if image.missing_since is None:
                image.missing_since = now
                self.report.missing += 1


def _upsert(s: Session, model, ids: dict[str, int], values: dict[str, Any]) -> bool:
    """Insert or update the row of ``values["path"]`` (``ids`` maps paths to row ids); whether it was new."""
    row_id = ids.get(values["path"])
    if row_id is None:
        row = model(**values)
        s.add(row)
        s.flush()
        ids[values["path"]] = row.id
        return True
    row = s.get(model, row_id)
    for key, value in values.items():
        setattr(row, key, value)
    return False


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _mark_interrupted(catalog: Catalog) -> None:
    """Scan jobs left ``running`` by a process of this host that no longer exists were killed: say so."""
    host = socket.gethostname()
    with catalog.session() as s:
        for job in s.scalars(select(Job).where(Job.kind == "scan", Job.status == "running")):
            params = job.params or {}
            if params.get("host") != host or _pid_alive(params.get("pid")):
                continue
            job.status = "interrupted"
            job.finished_at = _now()
            job.error = f"scan process {params.get('pid')} ended before finishing (killed?); rescan to complete"


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _skip_paths(catalog: Catalog) -> set[str]:
    """The catalog's own SQLite files, in case the scanned tree contains them."""
    if catalog.engine.dialect.name != "sqlite" or not catalog.engine.url.database:
        return set()
    base = str(Path(catalog.engine.url.database).resolve())
    return {base + suffix for suffix in ("", "-wal", "-shm", "-journal")}


def scan(
    catalog: Catalog,
    root: str | Path,
    *,
    workers: int | None = None,
    batch_size: int = 200,
    on_progress: Callable[[int, int], None] | None = None,
    reader: Callable[[list[str]], Iterable[dict[str, Any]]] | None = None,
) -> ScanReport:
    """Index the DICOM files below ``root`` into ``catalog``, incrementally.

    Args:
        catalog: An open catalog (:func:`deepmia.data.catalog.open_catalog`).
        root: Folder to scan (recursively; symbolic links to files are followed, to folders not).
        workers: Header-parsing processes; ``None`` for the number of CPUs, 1 to parse in this process.
        batch_size: Files written per database transaction (a killed scan loses at most one batch of work).
        on_progress: Called with ``(files done, files to read)`` after each batch.
        reader: Parses the headers of many files elsewhere (e.g. as Ray tasks): ``reader(paths)`` yields
            :func:`read_header`'s result for each path, in any order; ``None`` uses ``workers`` local processes.

    Returns:
        A :class:`ScanReport`; its ``errors`` lists every problem file below ``root``.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, or ``workers``/``batch_size`` are not positive.
        CatalogError: The database failed; batches written before stay committed.
    """
    start = time.perf_counter()
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise InvalidArgumentError("not a folder", path=folder, fix="give the folder holding the DICOM files")
    folder = folder.resolve()
    workers = (os.cpu_count() or 1) if workers is None else int(check_range("workers", workers, low=1))
    batch_size = int(check_range("batch_size", batch_size, low=1))

    _mark_interrupted(catalog)
    with catalog.session() as s:
        job = Job(kind="scan", status="running", progress=0.0, created_at=_now(), started_at=_now(),
                  params={"root": str(folder), "workers": workers, "pid": os.getpid(), "host": socket.gethostname()})
        s.add(job)
        s.flush()
        report = ScanReport(root=str(folder), job_id=job.id)
    try:
        _run(catalog, folder, report, workers, batch_size, on_progress, reader)
    except BaseException as exc:
        with catalog.session() as s:
            job = s.get(Job, report.job_id)
            job.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            job.error = f"{type(exc).__name__}: {exc}"
            job.finished_at = _now()
        raise
    report.errors = catalog.errors(under=folder)
    report.seconds = time.perf_counter() - start
    with catalog.session() as s:
        job = s.get(Job, report.job_id)
        job.status, job.progress, job.finished_at, job.result = "done", 1.0, _now(), report.summary()
    return report


def _run(catalog: Catalog, folder: Path, report: ScanReport, workers: int, batch_size: int,
         on_progress: Callable[[int, int], None] | None, reader: Callable | None = None) -> None:
    prefix = _folder_prefix(folder)
    walk = _walk(folder, _skip_paths(catalog))
    report.files = len(walk.files)
    with catalog.session() as s:
        images = {row.path: row for row in s.execute(
            select(Instance.id, Instance.path, Instance.size, Instance.mtime_ns, Instance.missing_since)
            .where(Instance.path.startswith(prefix, autoescape=True)))}
        errors = {row.path: row for row in s.execute(
            select(ScanError.id, ScanError.path, ScanError.size, ScanError.mtime_ns, ScanError.kind)
            .where(ScanError.path.startswith(prefix, autoescape=True)))}

    to_read = []
    for path, stat in walk.files.items():
        image, error = images.get(path), errors.get(path)
        if image is not None and image.missing_since is None and (image.size, image.mtime_ns) == stat:
            report.unchanged += 1
        elif error is not None and error.kind != "unreadable" and (error.size, error.mtime_ns) == stat:
            report.unchanged += 1
        else:
            to_read.append(path)
    report.read = len(to_read)

    writer = _Writer(catalog, report, walk, {p: r.id for p, r in images.items()}, {p: r.id for p, r in errors.items()})
    total, done = len(to_read), 0
    if on_progress:
        on_progress(0, total)
    try:
        headers = _read_all(to_read, workers) if reader is None else reader(to_read)
        for batch in _batches(headers, batch_size):
            done += len(batch)
            writer.write(batch, done=done, total=total)
            if on_progress:
                on_progress(done, total)
        _finish(catalog, writer, walk, images, errors)
    except CatalogError:
        raise
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            raise CatalogError(f"database error during scan: {exc}", path=catalog.url,
                               fix="batches written so far are kept; fix the database and rescan") from exc
        raise


def _finish(catalog: Catalog, writer: _Writer, walk: _Walk, images: dict, errors: dict) -> None:
    """Record folder-level problems, mark deleted images missing and forget errors of deleted files."""
    now = _now()
    with catalog.session() as s:
        seen = {p["path"] for p in walk.problems}
        for problem in walk.problems:
            writer._write_problem(s, problem, now)
        for path, row in images.items():
            if path not in walk.files and path not in seen and row.missing_since is None:
                s.get(Instance, row.id).missing_since = now
                writer.report.missing += 1
        for path in errors:
            if path not in walk.files and path not in seen and path in writer.errors:
                s.delete(s.get(ScanError, writer.errors.pop(path)))


def _read_all(paths: list[str], workers: int) -> Iterator[dict[str, Any]]:
    if workers == 1 or len(paths) < MIN_FILES_FOR_POOL:
        yield from map(read_header, paths)
        return
    chunk = max(1, min(32, len(paths) // (workers * 8)))
    # forkserver: no fork of a process that holds database connections and a progress-bar thread.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(read_header, paths, chunksize=chunk)
