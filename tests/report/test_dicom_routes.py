"""DICOM outputs beyond a segmented DICOM series: non-DICOM inputs with a stated patient, BCCD and PneumoniaMNIST
pictures from the command line, 3D detections as volumetric ROIs, and the refusals (deepmia.report.dicom_source).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deepmia.cli.main import main
from deepmia.errors import GeometryError, InvalidArgumentError
from deepmia.image import Image
from deepmia.io import read_image, write_image
from deepmia.report.dicom import DicomIdentity, dicom_outputs, load_codes, read_seg
from deepmia.tasks.detect.result import DetectResult
from deepmia.tasks.segment.result import SegmentResult

REPO = Path(__file__).resolve().parents[2]
HIPPO = REPO / "deepmia" / "samples" / "hippocampus" / "hippocampus_003.nii.gz"
XRAY = REPO / "deepmia" / "samples" / "xray" / "pneumoniamnist_test_001_label0.png"
BCCD = ("bccd", "BCCD", "JPEGImages", "BloodImage_00001.jpg")
TEMPLATE = ("dicom", "pydicom", "RG1_J2KI.dcm")


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is not installed (Debian package dicom3tools)")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _sr(path: Path):
    import highdicom as hd

    return hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content


def _referenced(region) -> str:
    """The SOP Instance UID an SR image region (SCOORD) is drawn on."""
    return region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID


def _meaning(name: str) -> str:
    return load_codes().get(name, {"type": ["", "", name]})["type"][2]


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_bccd_jpeg_with_a_patient_id_gets_a_source_series_and_an_sr_with_one_roi_per_cell(shared_data, tmp_path):
    picture = shared_data.joinpath(*BCCD)
    out = tmp_path / "out"
    assert main(["predict", "bccd", str(picture), str(out), "--dicom", "--patient-id", "ANON-7"]) == 0
    source = sorted((out / "dicom" / "BloodImage_00001.source").iterdir())
    assert len(source) == 1  # the picture as a one-image DICOM series
    src = pydicom.dcmread(source[0])
    assert src.PatientID == "ANON-7" and src.PhotometricInterpretation == "RGB"
    assert np.array_equal(read_image(source[0]).array[..., 0], read_image(picture).array)  # one slice
    sr_path = out / "dicom" / "BloodImage_00001.sr.dcm"
    sr = pydicom.dcmread(sr_path)
    assert sr.PatientID == "ANON-7" and sr.StudyInstanceUID == src.StudyInstanceUID
    with (out / "measurements.csv").open() as f:
        scores = [r for r in csv.DictReader(f) if r["quantity"] == "score"]
    groups = _sr(sr_path).get_planar_roi_measurement_groups()
    assert len(groups) == len(scores) > 0
    for group, row in zip(groups, scores, strict=True):
        assert _referenced(group.roi) == src.SOPInstanceUID
        assert group.get_measurements()[0].value == pytest.approx(float(row["value"]), abs=1e-4)
    assert {g.finding_type.meaning for g in groups} <= {"Erythrocyte", "Leukocyte", "Platelet"}
    for path in (sr_path, source[0]):
        assert _dciodvfy_errors(path) == [], path.name
    again = tmp_path / "exported"  # the same objects afterwards, in the same study (patient from run.json)
    assert main(["export", "dicom", str(out), str(picture), str(again)]) == 0
    exported_sr = pydicom.dcmread(again / "BloodImage_00001.sr.dcm")
    assert (exported_sr.PatientID, exported_sr.StudyInstanceUID) == ("ANON-7", sr.StudyInstanceUID)
    exported = _sr(again / "BloodImage_00001.sr.dcm").get_planar_roi_measurement_groups()
    assert len(exported) == len(groups)
    for a, b in zip(exported, groups, strict=True):  # predictions.json keeps boxes to 0.01 pixel
        assert np.allclose(np.asarray(a.roi.value), np.asarray(b.roi.value), atol=0.02)


@pytest.mark.shared_data
def test_a_pneumoniamnist_png_with_a_template_lands_in_the_templates_study(shared_data, tmp_path):
    template = shared_data.joinpath(*TEMPLATE)
    out = tmp_path / "out"
    assert main(["predict", "pneumoniamnist", str(XRAY), str(out), "--dicom", "--template", str(template)]) == 0
    reference = pydicom.dcmread(template, stop_before_pixels=True)
    sr_path = out / "dicom" / "pneumoniamnist_test_001_label0.sr.dcm"
    sr = pydicom.dcmread(sr_path)
    assert (sr.PatientID, sr.StudyInstanceUID) == (reference.PatientID, reference.StudyInstanceUID)
    assert sr.SeriesInstanceUID != reference.SeriesInstanceUID
    with (out / "predictions.csv").open() as f:
        row = next(csv.DictReader(f))
    groups = {g.tracking_identifier: g for g in _sr(sr_path).get_image_measurement_groups()}
    assert groups["decision"].finding_type.meaning == _meaning(row["label"])
    for name in ("normal", "pneumonia"):
        assert groups[name].get_measurements()[0].value == pytest.approx(float(row[f"prob_{name}"]), abs=1e-5)
    assert _dciodvfy_errors(sr_path) == []


def _synthetic_segmentation(image: Image) -> SegmentResult:
    arr = image.array[0]
    labels = np.where(arr > np.percentile(arr, 92), 2, np.where(arr > np.percentile(arr, 85), 1, 0)).astype(np.uint8)
    labels[:, :, :5] = np.minimum(labels[:, :, :5], 1)  # slices without structure 2
    p1 = np.clip((arr - arr.min()) / np.ptp(arr), 0, 1).astype(np.float32)
    probs = np.stack([1 - p1, p1 * 0.5, p1 * 0.5])
    return SegmentResult(Image(labels[None], image.affine, kind="label", meta=image.meta),
                         {1: "anterior", 2: "posterior"}, Image(probs, image.affine, meta=image.meta), image=image)


def test_a_nifti_segmentation_with_a_patient_id_gets_seg_and_fractional_seg_on_a_made_series(tmp_path):
    image = read_image(HIPPO)
    result = _synthetic_segmentation(image)
    identity = DicomIdentity(patient_id="P-1").resolved()
    written = dicom_outputs("hippocampus_003.nii.gz", result, tmp_path, identity=identity, probabilities=True)
    names = sorted(p.name for p in written)
    assert names[-4:] == ["hippocampus_003.prob.seg.dcm", "hippocampus_003.report.dcm", "hippocampus_003.seg.dcm",
                          "hippocampus_003.sr.dcm"]
    source = tmp_path / "dicom" / "hippocampus_003.source"
    made = read_image(source)
    assert np.allclose(made.affine, image.affine, atol=1e-4)
    step = np.ptp(image.array) / 65000  # the writer's float quantisation step
    assert np.abs(made.array - image.array).max() <= step
    assert np.array_equal(read_seg(tmp_path / "dicom" / "hippocampus_003.seg.dcm", source).array, result.labels.array)
    seg_path = tmp_path / "dicom" / "hippocampus_003.seg.dcm"
    frames = int(pydicom.dcmread(seg_path, stop_before_pixels=True).NumberOfFrames)
    assert frames < 2 * made.spatial_shape[2]  # empty frames left out ...
    with pytest.raises(GeometryError, match="read_seg"):  # ... so the generic reader points to read_seg
        read_image(seg_path)
    fractions = read_seg(tmp_path / "dicom" / "hippocampus_003.prob.seg.dcm", source).array
    assert np.abs(fractions - result.probabilities.array[1:]).max() <= 0.5 / 255 + 1e-6
    seg = pydicom.dcmread(tmp_path / "dicom" / "hippocampus_003.seg.dcm", stop_before_pixels=True)
    first = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    assert seg.PatientID == "P-1" and seg.StudyInstanceUID == identity.study_uid == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    for name in names[-3:]:
        assert _dciodvfy_errors(tmp_path / "dicom" / name) == [], name


def test_a_non_dicom_input_without_a_patient_is_refused_before_predicting(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "pneumoniamnist", str(XRAY), str(out), "--dicom"]) == 2
    err = capsys.readouterr().err
    assert str(XRAY) in err and "not DICOM" in err and "--patient-id" in err and "--template" in err
    assert not out.exists()
    with pytest.raises(InvalidArgumentError, match="need a DICOM source series") as caught:
        dicom_outputs("x.png", _synthetic_segmentation(read_image(HIPPO)), tmp_path)
    assert str(HIPPO) in str(caught.value) and "--patient-id" in str(caught.value)
    assert not (tmp_path / "dicom").exists()


@pytest.mark.parametrize("args, message", [
    (["--dicom", "--patient-id", "P", "--study-uid", "not-a-uid"], "not a valid DICOM UID"),
    (["--dicom", "--study-uid", "1.2.3.4"], "--study-uid needs --patient-id or --template"),
    (["--patient-id", "P"], "apply to --dicom outputs"),
    (["--dicom", "--template", str(HIPPO)], "the template is not a DICOM file"),
    (["--dicom", "--template", "missing.dcm"], "no such template file"),
])
def test_bad_patient_options_are_refused_before_predicting(args, message, tmp_path, capsys):
    assert main(["predict", "pneumoniamnist", str(XRAY), str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_3d_detections_become_volumetric_rois_with_one_outline_per_slice(tmp_path):
    image = read_image(HIPPO)
    image.meta.update(modality="MR")
    write_image(image, tmp_path / "series", format="dicom", series_number=3)
    source = read_image(tmp_path / "series")
    boxes = np.array([[2, 3, 4.5, 10, 12, 7.2], [5, 5, 10, 8, 9, 11], [1, 1, 1, 2, 2, 2]], dtype=float)
    result = DetectResult(case="c", boxes=boxes, scores=np.array([0.9, 0.5, 0.1]), labels=np.array([0, 1, 0]),
                          class_names=["nodule", "mass"], affine=source.affine, min_score=0.3, image=source)
    sr_path, report = dicom_outputs("c", result, tmp_path / "out")
    assert report.name == "c.report.dcm"
    groups = _sr(sr_path).get_volumetric_roi_measurement_groups()
    assert len(groups) == 2  # the third box is under min_score
    by_position = {}
    for p in sorted((tmp_path / "series").iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        index = np.linalg.inv(source.affine) @ [*(np.asarray(ds.ImagePositionPatient) * [-1, -1, 1]), 1]
        by_position[int(round(index[2]))] = ds.SOPInstanceUID
    for group, box, score in zip(groups, boxes, (0.9, 0.5), strict=False):
        slices = range(int(np.floor(box[2])), int(np.ceil(box[5])))
        assert [_referenced(r) for r in group.roi] == [by_position[k] for k in slices]
        assert np.allclose(np.asarray(group.roi[0].value)[[0, 2]], [box[[0, 1]], box[[3, 4]]])
        assert group.get_measurements()[0].value == pytest.approx(score)
    assert _dciodvfy_errors(sr_path) == []


def test_a_2d_segmentation_of_a_png_gets_a_one_frame_seg_and_an_sr_of_its_area(tmp_path):
    import highdicom as hd

    picture = read_image(XRAY)
    labels = (picture.array[0] > np.percentile(picture.array[0], 70)).astype(np.uint8)
    probs = np.stack([1 - labels * 0.8, labels * 0.8]).astype(np.float32)
    result = SegmentResult(Image(labels[None], picture.affine, kind="label", meta=picture.meta), {1: "lung"},
                           Image(probs, picture.affine, meta=picture.meta), image=picture)
    dicom_outputs("x.png", result, tmp_path, identity=DicomIdentity(patient_id="P").resolved(), probabilities=True)
    source = tmp_path / "dicom" / "x.source"
    assert np.array_equal(read_seg(tmp_path / "dicom" / "x.seg.dcm", source).array[..., 0], labels[None])
    fractions = read_seg(tmp_path / "dicom" / "x.prob.seg.dcm", source).array[..., 0]
    assert np.abs(fractions - probs[1:]).max() <= 0.5 / 255 + 1e-6
    (group,) = _sr(tmp_path / "dicom" / "x.sr.dcm").get_volumetric_roi_measurement_groups()
    area, diameter = group.get_measurements()
    assert area.name.meaning == "Area" and float(area.value) == pytest.approx(labels.sum() * np.prod(picture.spacing))
    assert diameter.unit.value == "mm" and float(diameter.value) > 0
    assert hd.seg.segread(tmp_path / "dicom" / "x.seg.dcm").number_of_frames == 1
    for name in ("x.seg.dcm", "x.prob.seg.dcm", "x.sr.dcm"):
        assert _dciodvfy_errors(tmp_path / "dicom" / name) == [], name
