"""``deepmia catalog``: scan, list, series, errors, migrate through the real command entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from deepmia.cli.main import main


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["catalog", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.shared_data
def test_scan_then_query_default_db_in_current_folder(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = shared_data / "dicom" / "mr_study"
    series_uids = {pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in root.rglob("*.dcm")}

    code, out, err = _run(capsys, "scan", str(root), "--workers", "2", "--json")
    assert code == 1, err  # README.txt is not indexed (listed): tests/cli/test_exit_codes.py
    report = json.loads(out)
    assert report["added"] == sum(1 for _ in root.rglob("*.dcm"))
    assert [Path(e["path"]).name for e in report["errors"]] == ["README.txt"]
    assert (tmp_path / "deepmia-catalog.sqlite").is_file()  # the documented default location

    code, out, _ = _run(capsys, "series", "--json")
    assert code == 0 and {s["series_uid"] for s in json.loads(out)} == series_uids
    code, out, _ = _run(capsys, "series", "--modality", "CT", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = _run(capsys, "list", "--json")
    listing = json.loads(out)
    assert code == 0 and listing["counts"]["series"] == len(series_uids)
    assert sum(s["series"] for s in listing["studies"]) == len(series_uids)

    code, out, err = _run(capsys, "scan", str(root))  # human-readable rescan: nothing read, the error listed
    assert code == 1
    assert " 0 read, 0 added" in out and "README.txt: not_dicom" in err
    code, out, _ = _run(capsys, "errors", "--under", str(root))
    assert code == 0 and out.strip().endswith("not a DICOM file (no DICM header and no DICOM UIDs)")


def test_migrate_and_bad_arguments(tmp_path, capsys):
    db = tmp_path / "new.sqlite"
    code, out, _ = _run(capsys, "migrate", "--db", str(db))
    from deepmia.data.catalog import head_revision

    assert code == 0 and f"schema at revision {head_revision()}" in out and db.is_file()
    code, _, err = _run(capsys, "scan", str(tmp_path / "absent"), "--db", str(db))
    assert code == 2 and "not a folder" in err
    code, _, err = _run(capsys, "list", "--db", str(tmp_path / "no" / "such" / "folder.sqlite"))
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "list", "--db", "nosuchdialect://x/y")
    assert code == 2 and "cannot open catalog database" in err


@pytest.mark.shared_data
def test_list_and_series_tables_print_dates_and_numbers(shared_data, tmp_path, capsys):
    root = shared_data / "dicom" / "mr_study"
    db = str(tmp_path / "c.sqlite")
    assert _run(capsys, "scan", str(root), "--db", db, "--workers", "1")[0] == 1  # README.txt not indexed
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in root.rglob("*.dcm")]
    study_date = headers[0].StudyDate  # YYYYMMDD
    iso = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    code, out, _ = _run(capsys, "list", "--db", db)
    study_line = next(line for line in out.splitlines() if headers[0].StudyInstanceUID in line)
    assert code == 0 and study_line.split()[1] == iso  # was "10": f"{date:10}" called date.strftime("10")
    code, out, _ = _run(capsys, "series", "--db", db)
    for ds in headers[:3]:
        line = next(line for line in out.splitlines() if line.startswith(ds.SeriesInstanceUID))
        assert f"#{ds.SeriesNumber}" in line and f"{ds.Modality}" in line
        n_images = sum(1 for h in headers if h.SeriesInstanceUID == ds.SeriesInstanceUID)
        assert f"{n_images} images" in line
