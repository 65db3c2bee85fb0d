"""De-identification on real DICOM files: nothing identifying survives, pseudonyms and dates stay consistent."""

from __future__ import annotations

import datetime
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest

from deepmia.deid import Deidentifier, burned_in_risk, deidentify_tree
from deepmia.errors import InvalidArgumentError, ReadError, WriteError

IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "AccessionNumber", "OperatorsName", "PerformingPhysicianName", "StudyID", "StationName", "DeviceSerialNumber",
    "PatientAddress", "OtherPatientIDs", "PatientAge", "PatientWeight", "SeriesDescription", "ImageComments",
)
DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
PYDICOM_FILES = (
    "US1_UNCR.dcm", "OT-PAL-8-face.dcm", "SC_rgb.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "emri_small.dcm",
    "liver.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm", "RG3_J2KR.dcm",
)


@pytest.fixture(scope="module")
def mr_study(shared_data) -> Path:
    return shared_data / "dicom" / "mr_study"


@pytest.fixture(scope="module")
def pydicom_subset(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pydicom_subset")
    for name in PYDICOM_FILES:
        shutil.copy(shared_data / "dicom" / "pydicom" / name, folder / name)
    (folder / "notes.txt").write_text("not a DICOM file")
    return folder


@pytest.fixture(scope="module")
def runs(mr_study, tmp_path_factory):
    """The MR study de-identified twice with one key and once with another."""
    out = {}
    for name, key in (("a", "secret-1"), ("b", "secret-1"), ("c", "secret-2")):
        dst = tmp_path_factory.mktemp("deid") / name
        out[name] = (dst, deidentify_tree(mr_study, dst, key=key))
    return out


def pairs(src: Path, dst: Path):
    for out in sorted(dst.rglob("*.dcm")):
        yield pydicom.dcmread(src / out.relative_to(dst), force=True), pydicom.dcmread(out)


def as_date(value: str) -> datetime.date:
    return datetime.datetime.strptime(str(value), "%Y%m%d").date()


def assert_deidentified(original, ds) -> None:
    for keyword in IDENTIFYING:
        before = str(original.get(keyword, "") or "")
        after = str(ds.get(keyword, "") or "")
        if before:
            assert after != before and before not in after, keyword
    assert not any(tag.is_private for tag in ds.keys())
    assert not any(0x6000 <= tag.group <= 0x60FF for tag in ds.keys())
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert "113100" in codes and ds.DeidentificationMethod
    assert ds.PatientIdentityRemoved == ("NO" if burned_in_risk(original) else "YES")
    if "PixelData" in original:
        assert ds.PixelData == original.PixelData


def test_mr_study_nothing_identifying_survives_and_pixels_are_unchanged(mr_study, runs):
    dst, report = runs["a"]
    assert report.counts() == {"deidentified": 128, "not_dicom": 1, "failed": 0, "burned_in_flagged": 0}
    assert [f.source for f in report.files if f.status == "not_dicom"] == ["README.txt"]
    assert not (dst / "README.txt").exists()
    n = 0
    for original, ds in pairs(mr_study, dst):
        assert_deidentified(original, ds)
        n += 1
    assert n == 128


def test_pydicom_files_are_deidentified_and_risky_ones_flagged(pydicom_subset, tmp_path):
    report = deidentify_tree(pydicom_subset, tmp_path / "out", key="k")
    status = {f.source: f for f in report.files}
    assert status["notes.txt"].status == "not_dicom"
    assert all(status[name].status == "deidentified" for name in PYDICOM_FILES)
    for original, ds in pairs(pydicom_subset, tmp_path / "out"):
        assert_deidentified(original, ds)
    flagged = {f.source for f in report.flagged()}
    assert {"US1_UNCR.dcm", "OT-PAL-8-face.dcm", "SC_rgb.dcm"} <= flagged
    assert not flagged & {"MR-SIEMENS-DICOM-WithOverlays.dcm", "liver.dcm", "MR2_UNCR.dcm"}
    written = json.loads(report.write(tmp_path / "report.json").read_text())
    assert written["counts"]["burned_in_flagged"] == len(flagged)
    assert {f["source"] for f in written["files"]} == {*PYDICOM_FILES, "notes.txt"}
    csv_text = report.write(tmp_path / "report.csv").read_text()
    assert "US1_UNCR.dcm" in csv_text and "burned_in_risk" in csv_text.splitlines()[0]


def test_burned_in_annotation_yes_is_flagged_on_any_modality(mr_study):
    ds = pydicom.dcmread(next(mr_study.rglob("*.dcm")))
    assert burned_in_risk(ds) is None
    ds.BurnedInAnnotation = "YES"
    assert burned_in_risk(ds) == "BurnedInAnnotation is YES"
    Deidentifier(key="k")(ds)
    assert ds.PatientIdentityRemoved == "NO"


def test_uids_remapped_consistently_and_dates_shifted_by_one_constant(mr_study, runs):
    dst, _ = runs["a"]
    studies: dict[str, set[str]] = defaultdict(set)
    series: dict[str, set[str]] = defaultdict(set)
    shifts: dict[str, set[int]] = defaultdict(set)
    sop: dict[str, str] = {}
    for original, ds in pairs(mr_study, dst):
        study = original.StudyInstanceUID
        studies[study].add(ds.StudyInstanceUID)
        series[original.SeriesInstanceUID].add(ds.SeriesInstanceUID)
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID != original.SOPInstanceUID
        sop[original.SOPInstanceUID] = ds.SOPInstanceUID
        for keyword in DATES:
            if original.get(keyword):
                shifts[study].add((as_date(ds.get(keyword)) - as_date(original.get(keyword))).days)
    assert studies and all(len(v) == 1 for v in studies.values())  # one new StudyInstanceUID per study
    assert len({next(iter(v)) for v in studies.values()}) == len(studies)  # distinct studies stay distinct
    assert all(len(v) == 1 for v in series.values())
    assert len(series) > 1 and len({next(iter(v)) for v in series.values()}) == len(series)  # same number of series
    assert len(set(sop.values())) == len(sop)
    for study, days in shifts.items():
        assert len(days) == 1 and next(iter(days)) < 0, study


def test_same_key_same_pseudonyms_other_key_other_ones(runs):
    def identity(dst: Path) -> dict[str, tuple]:
        out = {}
        for path in sorted(dst.rglob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            out[str(path.relative_to(dst))] = (str(ds.PatientID), str(ds.PatientName), ds.StudyInstanceUID,
                                               ds.SeriesInstanceUID, ds.StudyDate)
        return out

    a, b, c = (identity(runs[k][0]) for k in "abc")
    assert a == b
    assert a.keys() == c.keys()
    for rel in a:
        assert all(x != y for x, y in zip(a[rel][:4], c[rel][:4], strict=True))


def test_single_file_into_a_folder_and_to_a_file(shared_data, tmp_path):
    src = shared_data / "dicom" / "pydicom" / "US1_UNCR.dcm"
    (tmp_path / "folder").mkdir()
    report = deidentify_tree(src, tmp_path / "folder")
    assert (tmp_path / "folder" / "US1_UNCR.dcm").is_file() and report.files[0].burned_in_risk
    deidentify_tree(src, tmp_path / "single.dcm")
    assert pydicom.dcmread(tmp_path / "single.dcm").PatientName != pydicom.dcmread(src).PatientName


def test_bad_paths_are_refused(mr_study, tmp_path):
    with pytest.raises(ReadError, match="no such file"):
        deidentify_tree(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="inside the input"):
        deidentify_tree(mr_study, mr_study / "Study3" / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(WriteError, match="not empty"):
        deidentify_tree(mr_study, tmp_path / "full")
    with pytest.raises(InvalidArgumentError, match="empty"):
        Deidentifier(key="")
