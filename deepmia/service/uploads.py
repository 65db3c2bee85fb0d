"""Uploads: files and zips staged under server-chosen names, checked, optionally de-identified, then indexed.

No name from a request ever becomes a path: staged files are numbered (``000001.dcm``), only a known image suffix
of the sent name is kept, and zip members are extracted by number too (a member named ``../x`` or ``/etc/x`` is
refused). A zip is refused (413) when its members would expand beyond ``zip_max_total_bytes`` or a compression
ratio above ``zip_max_ratio`` (sizes are counted while extracting, not taken from the zip's headers), or when it
has more than ``zip_max_files`` members. Whatever fails leaves nothing behind.
"""

from __future__ import annotations

import hmac
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from fastapi import HTTPException
from sqlalchemy import and_, select
from sqlalchemy.orm import aliased

from deepmia.data.catalog import Catalog, scan
from deepmia.data.catalog.models import Instance, Patient, ScanError, Series, Study

from .settings import Settings

__all__ = ["SAMPLES", "Staged", "ingest", "load_samples", "stage"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
CHUNK = 1 << 20


def _suffix(name: str) -> str:
    """The image suffix of a sent file name (``.dcm`` for DICOM names, ``""`` for anything else)."""
    lower = name.lower()
    for suffix in (*IMAGE_SUFFIXES, ".dcm", ".dicom", ".zip"):
        if lower.endswith(suffix):
            return ".dcm" if suffix == ".dicom" else suffix
    return ""


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


@dataclass
class Staged:
    """Files of one upload in its staging folder: DICOM files, other images, and what was not taken."""

    root: Path
    dicom: list[Path] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    labels: dict[Path, str] = field(default_factory=dict)
    count: int = 0

    def new_path(self, suffix: str, sub: str = "raw") -> Path:
        """A fresh numbered path in the staging folder."""
        self.count += 1
        folder = self.root / sub
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.count:06d}{suffix}"

    def sort(self, path: Path, label: str) -> None:
        """File a staged file as DICOM, an image, or skipped (removed)."""
        suffix = _suffix(path.name)
        self.labels[path] = label
        if suffix in IMAGE_SUFFIXES:
            self.images.append(path)
        elif _is_dicom(path) or suffix == ".dcm":
            self.dicom.append(path)
        else:
            self.skipped.append(f"{label}: not a DICOM file or an image format deepmia reads")
            path.unlink()


def _refuse(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _extract_zip(source: Path, staged: Staged, settings: Settings, label: str) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(422, f"{label}: not a readable zip ({exc})") from None
    with archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        if len(members) > settings.zip_max_files:
            raise _refuse(413, f"{label}: {len(members)} members, over the limit of {settings.zip_max_files}")
        declared = sum(i.file_size for i in members)
        packed = max(1, sum(i.compress_size for i in members))
        if declared > settings.zip_max_total_bytes or declared > settings.zip_max_ratio * packed:
            raise _refuse(413, f"{label}: refused as a zip bomb ({declared} bytes from {packed})")
        total = 0
        for info in members:
            name = info.filename.replace("\\", "/")
            if name.startswith("/") or ".." in name.split("/") or ":" in name.split("/")[0]:
                raise _refuse(422, f"{label}: member {name!r} points outside the upload")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                staged.skipped.append(f"{label}/{name}: a symbolic link")
                continue
            target = staged.new_path(_suffix(name))
            with archive.open(info) as src, open(target, "wb") as out:
                written = 0
                while block := src.read(CHUNK):
                    written, total = written + len(block), total + len(block)
                    if (total > settings.zip_max_total_bytes or written > settings.zip_max_ratio * max(
                            1, info.compress_size) or total > settings.zip_max_ratio * packed):
                        raise _refuse(413, f"{label}: refused as a zip bomb (expands beyond the limits)")
                    out.write(block)
            staged.sort(target, f"{label}/{name}")


def stage(uploads: list[tuple[str, IO[bytes]]], settings: Settings) -> Staged:
    """Copy uploaded files (and extract zips) into a fresh staging folder under the data folder.

    Args:
        uploads: ``(sent file name, readable file)`` pairs; the name is used only for its suffix and messages.
        settings: The limits.

    Raises:
        HTTPException: 413 for a zip bomb, 422 for a bad zip; the staging folder is removed first.
    """
    staged = Staged(Path(settings.data_dir) / "uploads" / f".staging-{uuid.uuid4().hex}")
    staged.root.mkdir(parents=True)
    try:
        for name, file in uploads:
            label = os.path.basename(name or "file")[:200]
            target = staged.new_path(_suffix(label))
            with open(target, "wb") as out:
                shutil.copyfileobj(file, out, CHUNK)
            if target.suffix == ".zip" or zipfile.is_zipfile(target):
                _extract_zip(target, staged, settings, label)
                target.unlink()
            else:
                staged.sort(target, label)
    except BaseException:
        shutil.rmtree(staged.root, ignore_errors=True)
        raise
    return staged


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _register_image(catalog: Catalog, path: Path, label: str) -> None:
    """Index a non-DICOM image as a study of one series of one file (generated UIDs)."""
    stat = path.stat()
    with catalog.session() as s:
        patient = Patient(pseudonym=uuid.uuid4().hex)
        study = Study(study_uid=_uid(), patient=patient, description=f"upload {label}"[:200])
        series = Series(series_uid=_uid(), study=study, description=label[:200], modality="OT")
        s.add_all([patient, study, series])
        s.add(Instance(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns, series=series,
                       sop_instance_uid=_uid(), indexed_at=_now()))


def _drop_duplicates(catalog: Catalog, prefix: str) -> set[int]:
    """Forget (and delete) newly stored DICOM instances that were already stored (an upload sent twice).

    Returns:
        The series that already held them (the upload's data is there).
    """
    older = aliased(Instance)
    with catalog.session() as s:
        rows = s.execute(select(Instance.id, Instance.path, older.series_id).join(older, and_(
            older.sop_instance_uid == Instance.sop_instance_uid, older.id != Instance.id,
            older.missing_since.is_(None), ~older.path.startswith(prefix, autoescape=True)))
            .where(Instance.path.startswith(prefix, autoescape=True))).all()
        for row_id in {r[0] for r in rows}:
            s.delete(s.get(Instance, row_id))
        for path in {r[1] for r in rows}:
            Path(path).unlink(missing_ok=True)
    return {r[2] for r in rows}


def ingest(catalog: Catalog, staged: Staged, settings: Settings, *, deid: bool) -> tuple[list[int], list[str]]:
    """Move a staged upload into the store (de-identified if asked) and index it; returns its series ids.

    Raises:
        HTTPException: 422 when nothing in the upload is a DICOM file or an image deepmia reads.
    """
    final = (Path(settings.data_dir) / "studies" / staged.root.name.removeprefix(".staging-")).resolve()
    try:
        if not staged.dicom and not staged.images:
            raise _refuse(422, "nothing in the upload is a DICOM file or an image deepmia reads: "
                               + "; ".join(staged.skipped[:5]))
        final.mkdir(parents=True)
        if staged.dicom:
            _store_dicom(catalog, staged, final / "dicom", settings, deid)
        for path in staged.images:
            target = final / "images" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            _register_image(catalog, target, staged.labels.get(path, path.name))
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staged.root, ignore_errors=True)
    prefix = str(final) + "/"
    known = _drop_duplicates(catalog, prefix)
    with catalog.session() as s:
        query = select(Instance.series_id).where(Instance.path.startswith(prefix, autoescape=True))
        ids = sorted(set(s.scalars(query)) | known)
    return ids, staged.skipped


def _store_dicom(catalog: Catalog, staged: Staged, folder: Path, settings: Settings, deid: bool) -> None:
    if deid:
        from deepmia.deid import deidentify_tree

        source = staged.root / "dicom-in"
        source.mkdir()
        for path in staged.dicom:
            os.replace(path, source / path.name)
        key = settings.deid_key or hmac.new(catalog.salt().encode(), b"deepmia-deid", "sha256").hexdigest()
        report = deidentify_tree(source, folder, key=key)
        staged.skipped += [f"{f.source}: {f.status}: {f.message}" for f in report.files if f.status != "deidentified"]
    else:
        folder.mkdir(parents=True)
        for path in staged.dicom:
            os.replace(path, folder / path.name)
    report_scan = scan(catalog, folder, workers=1)
    staged.skipped += [f"{staged.labels.get(staged.root / 'raw' / Path(e['path']).name, Path(e['path']).name)}: "
                       f"{e['problem']}" for e in report_scan.errors]
    if report_scan.errors:  # what could not be indexed is not kept
        with catalog.session() as s:
            for row in s.scalars(select(ScanError).where(ScanError.path.in_([e["path"] for e in report_scan.errors]))):
                s.delete(row)
        for e in report_scan.errors:
            Path(e["path"]).unlink(missing_ok=True)


#: The bundled samples ``deepmia serve --samples`` stores (relative to ``deepmia/samples``).
SAMPLES = ("dicom/files", "ct/example_ct_sm.nii.gz", "hippocampus/hippocampus_001.nii.gz",
           "hippocampus/hippocampus_003.nii.gz", "photo/BloodImage_00000.jpg",
           "xray/pneumoniamnist_test_000_label1.png")


def load_samples(catalog: Catalog, settings: Settings) -> list[int]:
    """Store the bundled samples once (a catalog remembers it did); returns the new series ids."""
    from contextlib import ExitStack

    from deepmia.data.catalog.models import CatalogInfo

    with catalog.session() as s:
        if s.get(CatalogInfo, "samples_loaded") is not None:
            return []
    root = Path(__file__).resolve().parents[1] / "samples"
    paths = [p for rel in SAMPLES for p in ((sorted((root / rel).iterdir())) if (root / rel).is_dir()
                                            else [root / rel]) if p.is_file()]
    with ExitStack() as stack:
        staged = stage([(p.name, stack.enter_context(open(p, "rb"))) for p in paths], settings)
    ids, _ = ingest(catalog, staged, settings, deid=False)
    with catalog.session() as s:
        s.add(CatalogInfo(key="samples_loaded", value=_now().isoformat()))
    return ids
