"""``deepmia deid``: output tree, report beside it, flagged files printed, one-line errors."""

from __future__ import annotations

import json
import shutil

import pydicom

from deepmia.cli.main import main


def test_deid_folder_writes_tree_and_report(shared_data, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "us").mkdir(parents=True)
    shutil.copy(shared_data / "dicom" / "pydicom" / "US1_UNCR.dcm", src / "us" / "a.dcm")
    series = next((shared_data / "dicom" / "mr_study").glob("Study*/*"))
    shutil.copytree(series, src / "mr")
    (src / "readme.txt").write_text("notes")
    key_file = tmp_path / "key.txt"
    key_file.write_text("secret\n")

    # 1: readme.txt is not DICOM, not copied and listed (tests/cli/test_exit_codes.py)
    assert main(["deid", str(src), str(tmp_path / "out"), "--key-file", str(key_file)]) == 1
    captured = capsys.readouterr()
    assert "not DICOM, not copied: readme.txt" in captured.err
    assert "us/a.dcm" in captured.err and "burned" in captured.err
    report = json.loads((tmp_path / "out.deid-report.json").read_text())
    assert report["keyed"] is True and report["counts"]["not_dicom"] == 1
    assert report["counts"]["deidentified"] == 1 + len(list(series.iterdir()))
    assert not (tmp_path / "out" / "readme.txt").exists()
    ds = pydicom.dcmread(tmp_path / "out" / "us" / "a.dcm")
    assert ds.PatientIdentityRemoved == "NO"

    assert main(["deid", str(src / "us" / "a.dcm"), str(tmp_path / "one.dcm"), "--key", "secret",
                 "--report", str(tmp_path / "r.csv")]) == 0
    assert pydicom.dcmread(tmp_path / "one.dcm").PatientID == ds.PatientID  # same key, same pseudonym
    assert "a.dcm" in (tmp_path / "r.csv").read_text()


def test_deid_bad_input_exits_non_zero_with_one_line(tmp_path, capsys):
    assert main(["deid", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no such file" in err and "\n" not in err

    (tmp_path / "in").mkdir()
    assert main(["deid", str(tmp_path / "in"), str(tmp_path / "in" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "inside the input" in err and "\n" not in err

    assert main(["deid", str(tmp_path / "in"), str(tmp_path / "o"), "--key", "a", "--key-file", "k"]) == 2
    assert "not both" in capsys.readouterr().err
