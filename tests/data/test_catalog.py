"""Catalog database and scan: every test runs on SQLite and on PostgreSQL (DEEPMIA_TEST_POSTGRES_URL, set by CI)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from importlib import import_module
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from deepmia.data.catalog import head_revision, open_catalog, scan
from deepmia.data.catalog.models import Base, Instance, Job, Patient, ScanError, Series, Study
from deepmia.errors import InvalidArgumentError

scan_module = import_module("deepmia.data.catalog.scan")  # the module, not the function it exports


@pytest.fixture
def catalog(db_url):
    with open_catalog(db_url) as c:
        yield c


def _series_tree(shared_data: Path, dst: Path, n_series: int = 2) -> Path:
    """Copy the first ``n_series`` series folders of mr_study to ``dst`` (keeping mtimes)."""
    study = shared_data / "dicom" / "mr_study"
    folders = sorted(p for p in study.rglob("*") if p.is_dir() and any(p.glob("*.dcm")))[:n_series]
    for folder in folders:
        shutil.copytree(folder, dst / folder.relative_to(study))
    return dst


def _content(catalog, root: Path) -> list[tuple]:
    """The indexed content below ``root``, independent of row ids, timestamps and the pseudonym salt."""
    with catalog.session() as s:
        rows = s.execute(
            select(Instance.path, Instance.size, Instance.mtime_ns, Instance.sop_instance_uid, Instance.instance_number,
                   Instance.rows, Instance.columns, Instance.position_z, Instance.transfer_syntax_uid,
                   Instance.missing_since.is_(None), Series.series_uid, Series.modality, Study.study_uid)
            .join(Instance.series).join(Series.study).order_by(Instance.path))
        return [(str(Path(r[0]).relative_to(root)), *r[1:]) for r in rows]


def test_schema_is_migrated_and_matches_models(catalog):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with catalog.engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, Base.metadata) == []
    with open_catalog(catalog.engine.url.render_as_string(hide_password=False), upgrade=False) as again:
        assert again.counts()["images"] == 0


@pytest.mark.shared_data
def test_scan_mr_study_matches_pydicom(catalog, shared_data, monkeypatch):
    monkeypatch.setattr(scan_module, "MIN_FILES_FOR_POOL", 1)  # parse in worker processes even for this small tree
    root = shared_data / "dicom" / "mr_study"
    expected_series, expected_studies, raw_ids = Counter(), set(), set()
    for path in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        expected_series[ds.SeriesInstanceUID] += 1
        expected_studies.add(ds.StudyInstanceUID)
        raw_ids |= {str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))} - {""}

    report = scan(catalog, root, workers=2)

    assert report.read == report.files == sum(1 for p in root.rglob("*") if p.is_file())
    assert report.added == sum(expected_series.values())
    assert {s["series_uid"]: s["images"] for s in catalog.series()} == dict(expected_series)
    assert {s["study_uid"] for s in catalog.studies()} == expected_studies
    assert {e["path"] for e in report.errors} == {str(p) for p in root.rglob("*") if p.is_file() and p.suffix != ".dcm"}
    with catalog.session() as s:
        pseudonyms = set(s.scalars(select(Patient.pseudonym)))
        jobs = list(s.scalars(select(Job)))
    assert pseudonyms and not pseudonyms & raw_ids  # only the salted hash is stored
    assert [(j.kind, j.status, j.progress) for j in jobs] == [("scan", "done", 1.0)]
    assert jobs[0].result["added"] == report.added


@pytest.mark.shared_data
def test_rescan_of_unchanged_tree_reads_no_file(catalog, shared_data, tmp_path, monkeypatch):
    root = _series_tree(shared_data, tmp_path / "tree")
    (root / "notes.txt").write_text("not dicom")
    first = scan(catalog, root, workers=2)
    before = _content(catalog, root)

    def forbidden(*args, **kwargs):
        raise AssertionError("an unchanged file was read")

    monkeypatch.setattr(pydicom, "dcmread", forbidden)
    monkeypatch.setattr(scan_module, "read_header", forbidden)
    again = scan(catalog, root, workers=2)

    assert first.read == first.files > 0
    assert (again.read, again.added, again.updated, again.missing) == (0, 0, 0, 0)
    assert again.unchanged == first.files
    assert _content(catalog, root) == before
    assert [e["path"] for e in again.errors] == [str(root / "notes.txt")]


@pytest.mark.shared_data
def test_changed_files_are_reread_and_deleted_ones_marked(catalog, shared_data, tmp_path):
    root = _series_tree(shared_data, tmp_path / "tree")
    scan(catalog, root, workers=1)
    files = sorted(root.rglob("*.dcm"))
    changed, deleted = files[0], files[1]
    ds = pydicom.dcmread(changed)
    ds.InstanceNumber = 999
    ds.save_as(changed)
    deleted.unlink()

    report = scan(catalog, root, workers=1)

    assert (report.read, report.updated, report.added, report.missing) == (1, 1, 0, 1)
    with catalog.session() as s:
        assert s.scalar(select(Instance.instance_number).where(Instance.path == str(changed))) == 999
        assert s.scalar(select(Instance.missing_since).where(Instance.path == str(deleted))) is not None
    assert catalog.counts()["images"] == len(files) - 1
    shutil.copy2(files[2], deleted)  # the file comes back (as a copy of another instance)
    back = scan(catalog, root, workers=1)
    assert (back.read, back.updated, back.missing) == (1, 1, 0)
    assert catalog.counts()["images"] == len(files)


@pytest.mark.shared_data
def test_bad_files_are_recorded_and_lose_nothing(catalog, shared_data, tmp_path, monkeypatch):
    root = _series_tree(shared_data, tmp_path / "tree")
    scan(catalog, root, workers=2)
    before = _content(catalog, root)
    good = sorted(root.rglob("*.dcm"))
    bad = root / "bad"
    bad.mkdir()
    data = good[0].read_bytes()
    (bad / "header_cut.dcm").write_bytes(data[:400])  # ends before the UIDs: pydicom reads it without complaint
    (bad / "element_cut.dcm").write_bytes(data[:1000])  # ends inside a data element
    (bad / "pixels_cut.dcm").write_bytes(data[:-1000])  # header complete, pixel data truncated
    (bad / "random.bin").write_bytes(os.urandom(3000))
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "dangling").symlink_to(bad / "nowhere")
    locked = bad / "locked.dcm"
    shutil.copy2(good[0], locked)
    real_open = open

    def no_permission(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(scan_module, "open", no_permission, raising=False)  # root may read any file: simulate
    report = scan(catalog, root, workers=1)

    kinds = {Path(e["path"]).name: e["kind"] for e in report.errors}
    assert kinds == {"header_cut.dcm": "incomplete", "element_cut.dcm": "corrupt", "pixels_cut.dcm": "corrupt",
                     "random.bin": "not_dicom", "empty.dcm": "not_dicom", "dangling": "unreadable",
                     "locked.dcm": "unreadable"}
    assert "truncated" in next(e["problem"] for e in report.errors if e["path"].endswith("pixels_cut.dcm"))
    assert _content(catalog, root) == before  # nothing already indexed is lost
    assert catalog.counts()["errors"] == len(kinds)

    monkeypatch.undo()
    shutil.rmtree(bad)
    cleaned = scan(catalog, root, workers=1)
    assert cleaned.errors == [] and catalog.counts()["errors"] == 0
    assert _content(catalog, root) == before


@pytest.mark.shared_data
def test_pydicom_edge_cases_truncated_files_land_in_errors(catalog, shared_data):
    root = shared_data / "dicom" / "pydicom"
    report = scan(catalog, root, workers=2)
    files = {str(p) for p in root.iterdir() if p.is_file()}
    with catalog.session() as s:
        indexed = set(s.scalars(select(Instance.path)))
    errors = {e["path"]: e for e in report.errors}

    assert indexed | set(errors) == files and not indexed & set(errors)
    truncated = errors[str(root / "emri_small_jpeg_2k_lossless_too_short.dcm")]
    assert truncated["kind"] == "corrupt" and "truncated" in truncated["problem"]
    assert str(root / "emri_small_jpeg_2k_lossless.dcm") in indexed
    assert errors[str(root / "README.txt")]["kind"] == "not_dicom"
    # Every file pydicom reads with the three identifying UIDs is indexed, except the truncated one.
    readable = set()
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001
            continue
        if all(ds.get(k) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")):
            readable.add(path)
    assert readable - indexed == {truncated["path"]}


@pytest.mark.shared_data
def test_killed_scan_resumes_to_the_same_catalog(db_url, shared_data, tmp_path):
    root = _series_tree(shared_data, tmp_path / "tree", n_series=3)
    total = sum(1 for _ in root.rglob("*.dcm"))
    command = [sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "catalog", "scan", str(root),
               "--db", db_url, "--workers", "1", "--batch-size", "2"]
    with open_catalog(db_url) as catalog:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        indexed = 0
        while indexed < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            with catalog.session() as s:
                indexed = s.scalar(select(func.count(Instance.id)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        partial = catalog.counts()["images"]
        assert 4 <= partial < total  # killed half way, with whole batches committed

        report = scan(catalog, root, workers=2)
        assert report.read == report.files - partial  # only what the killed scan had not committed
        resumed, counts = _content(catalog, root), catalog.counts()
        statuses = [j.status for j in reversed(catalog.jobs(kind="scan"))]
    assert statuses == ["interrupted", "done"]
    with open_catalog(tmp_path / "clean.sqlite") as clean:
        scan(clean, root, workers=1)
        assert resumed == _content(clean, root)
        assert clean.counts() == counts


def test_scan_refuses_bad_arguments(catalog, tmp_path):
    with pytest.raises(InvalidArgumentError, match="not a folder"):
        scan(catalog, tmp_path / "absent")
    with pytest.raises(InvalidArgumentError, match="workers"):
        scan(catalog, tmp_path, workers=0)
    assert catalog.counts() == {"patients": 0, "studies": 0, "series": 0, "images": 0, "errors": 0}
    with catalog.session() as s:
        assert s.scalar(select(func.count(ScanError.id))) == 0
