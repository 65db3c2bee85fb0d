"""DICOM SEG and SR of a segmentation (deepmia.report.dicom; ``deepmia predict ... --dicom``).

The objects are read back with highdicom and deepmia's own reader and compared with the NIfTI label map voxel for
voxel; every object is validated with ``dciodvfy`` (Debian ``dicom3tools``; skipped when absent outside CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deepmia import __version__
from deepmia.cli.main import main
from deepmia.errors import GeometryError, InvalidArgumentError, SeriesError
from deepmia.image import Image
from deepmia.io import read_image, write_image
from deepmia.report.dicom import dicom_outputs, load_codes, read_seg, source_datasets, write_seg, write_sr
from deepmia.report.dicom_export import export_prediction
from deepmia.tasks.segment.result import SegmentResult

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "hippocampus"
HIPPO = REPO / "deepmia" / "samples" / "hippocampus" / "hippocampus_003.nii.gz"
REAL_SERIES = ("dicom", "mr_study", "Study3", "11_HCropVolume")


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """The bundled hippocampus volume written as a DICOM series."""
    folder = tmp_path_factory.mktemp("dicom") / "hippo"
    image = read_image(HIPPO)
    image.meta.update(modality="MR")
    write_image(image, folder, format="dicom", series_number=3, series_description="T1 crop")
    return folder


@pytest.fixture(scope="module")
def predicted(series, tmp_path_factory) -> Path:
    """``deepmia predict models/hippocampus SERIES OUT --dicom --probabilities``: the output folder."""
    out = tmp_path_factory.mktemp("out")
    assert main(["predict", str(MODEL), str(series), str(out), "--dicom", "--probabilities"]) == 0
    return out


def _datasets(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]


def _seg_on_source_grid(seg_path: Path, series: Path) -> np.ndarray:
    """The SEG read by highdicom as one label map, each frame placed by its source instance's position."""
    import highdicom as hd

    source = read_image(series)
    inverse = np.linalg.inv(source.affine)
    datasets = _datasets(series)
    seg = hd.seg.segread(seg_path)
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in datasets], combine_segments=True)
    volume = np.zeros(source.spatial_shape, dtype=np.uint8)
    for ds, frame in zip(datasets, frames, strict=True):
        ras = np.asarray(ds.ImagePositionPatient, dtype=float) * [-1, -1, 1]
        index = inverse[:3, :3] @ ras + inverse[:3, 3]
        assert np.allclose(index[:2], 0, atol=1e-3)
        volume[:, :, int(round(index[2]))] = frame.T
    return volume


def _content_texts(ds: pydicom.Dataset, meaning: str) -> list[str]:
    """Every TEXT value under the concept ``meaning`` anywhere in an SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning and "TextValue" in item:
            found.append(item.TextValue)
        found += _content_texts(item, meaning)
    return found


def _check_outputs(out: Path, series: Path, name: str) -> None:
    """SEG equals the NIfTI label map (highdicom and deepmia's reader); SR volumes = voxels x voxel volume."""
    import highdicom as hd

    labels = read_image(out / f"{name}.nii.gz", kind="label")
    seg_path, sr_path = out / "dicom" / f"{name}.seg.dcm", out / "dicom" / f"{name}.sr.dcm"
    assert np.array_equal(_seg_on_source_grid(seg_path, series), labels.array[0])
    source = read_image(series)
    own = read_seg(seg_path, series)  # deepmia's reader (pydicom only): the label map on the source geometry
    assert np.allclose(own.affine, source.affine, atol=1e-4)
    assert np.array_equal(own.array, labels.array)
    seg, src = pydicom.dcmread(seg_path), _datasets(series)[0]
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior", "posterior"]
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.SeriesInstanceUID not in (seg.SeriesInstanceUID,
                                                                                         src.SeriesInstanceUID)
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_volumetric_roi_measurement_groups()
    volumes = {g.tracking_identifier: g.get_measurements()[0] for g in groups}
    diameters = {g.tracking_identifier: g.get_measurements()[1] for g in groups}
    assert set(volumes) == {"anterior", "posterior"}
    for k, label in ((1, "anterior"), (2, "posterior")):
        expected = int((labels.array == k).sum()) * voxel_ml
        assert volumes[label].unit.value == "ml" and expected > 0
        assert abs(float(volumes[label].value) - expected) <= 0.001 * expected
        assert diameters[label].name.meaning == "Diameter" and diameters[label].unit.value == "mm"
        assert float(diameters[label].value) == pytest.approx(_brute_force_diameter(labels, k), abs=1e-3)
    assert set(_content_texts(sr, "Algorithm Name")) == {"hippocampus"}
    assert set(_content_texts(sr, "Algorithm Version")) == {__version__}


def _brute_force_diameter(labels, value: int) -> float:
    """The largest distance between two voxel centres of label ``value``, in world mm, over all pairs."""
    from scipy.spatial.distance import pdist

    return float(pdist(labels.voxel_to_world(np.argwhere(labels.array[0] == value).astype(float))).max())


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        reason = "dciodvfy is not installed (Debian package dicom3tools: apt-get install dicom3tools)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must install it (.ci/run)")
        pytest.skip(reason)
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_predict_dicom_writes_a_seg_equal_to_the_label_map_and_an_sr_of_its_volumes(predicted, series):
    assert sorted(p.name for p in (predicted / "dicom").iterdir()) == ["hippo.prob.seg.dcm", "hippo.report.dcm",
                                                                      "hippo.seg.dcm", "hippo.sr.dcm"]
    _check_outputs(predicted, series, "hippo")
    assert _dciodvfy_errors(predicted / "dicom" / "hippo.report.dcm") == []  # the Encapsulated PDF report
    record = json.loads((predicted / "run.json").read_text())
    assert "dicom/hippo.seg.dcm" in record["outputs"] and "dicom/hippo.sr.dcm" in record["outputs"]


@pytest.mark.slow
def test_predict_dicom_probabilities_writes_a_fractional_seg_of_the_probability_maps(predicted, series):
    import highdicom as hd

    path = predicted / "dicom" / "hippo.prob.seg.dcm"
    seg = hd.seg.segread(path)
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior", "posterior"]
    probs = read_image(predicted / "probabilities" / "hippo.nii.gz").array
    own = read_seg(path, series)  # one probability channel per segment, on the source grid
    assert own.shape == (2, *probs.shape[1:])
    assert np.abs(own.array - probs[1:]).max() <= 0.5 / 255 + 1e-6  # 8-bit fractions: 0..255 = 0..1
    datasets = _datasets(series)
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in datasets], segment_numbers=[1])
    ras = np.asarray(datasets[0].ImagePositionPatient, dtype=float) * [-1, -1, 1]
    k = int(round((np.linalg.inv(read_image(series).affine)[:3] @ [*ras, 1])[2]))
    assert np.abs(frames[0, :, :, 0].T - probs[1, :, :, k]).max() <= 0.5 / 255 + 1e-6


@pytest.mark.slow
def test_seg_and_sr_pass_dciodvfy(predicted):
    for path in sorted((predicted / "dicom").iterdir()):
        assert _dciodvfy_errors(path) == [], path.name


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_real_hippocampus_crop_series(shared_data, tmp_path):
    series = shared_data.joinpath(*REAL_SERIES)
    assert main(["predict", str(MODEL), str(series), str(tmp_path), "--dicom"]) == 0
    _check_outputs(tmp_path, series, series.name)
    for path in sorted((tmp_path / "dicom").iterdir()):
        assert _dciodvfy_errors(path) == [], path.name


def _result_on(series: Path, *, shift: float = 0.0) -> SegmentResult:
    """A SegmentResult on the series' grid (labels 1 and 2 by intensity), its affine shifted by ``shift`` voxels."""
    image = read_image(series)
    image.meta["source"] = str(series)
    arr = np.asarray(image.array[0])
    labels = np.where(arr > np.percentile(arr, 90), 2, np.where(arr > np.percentile(arr, 80), 1, 0)).astype(np.uint8)
    affine = image.affine.copy()
    affine[:3, 3] += affine[:3, 2] * shift
    return SegmentResult(Image(labels[None], affine, kind="label", meta=image.meta), {1: "anterior", 2: "posterior"})


def test_write_seg_and_sr_directly_from_a_result(series, tmp_path):
    result = _result_on(series)
    datasets = source_datasets(result.labels.meta)
    seg = write_seg(result, datasets, tmp_path / "a.seg.dcm", model_name="m")
    write_sr(result, datasets, tmp_path / "a.sr.dcm", segmentation=seg, model_name="m")
    assert np.array_equal(_seg_on_source_grid(tmp_path / "a.seg.dcm", series), result.labels.array[0])
    modifiers = [s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning
                 for s in pydicom.dcmread(tmp_path / "a.seg.dcm").SegmentSequence]
    assert modifiers == ["Anterior", "Posterior"]


def test_a_label_map_off_the_source_grid_is_refused(series, tmp_path):
    result = _result_on(series, shift=0.5)  # half a slice off: no frame lies on a source instance
    with pytest.raises(GeometryError, match="does not match the source series"):
        write_seg(result, source_datasets(result.labels.meta), tmp_path / "x.dcm")
    cropped = _result_on(series)
    cropped.labels = Image(cropped.labels.array[:, 1:], cropped.labels.affine, kind="label", meta=cropped.labels.meta)
    with pytest.raises(GeometryError, match="does not match the source"):
        write_seg(cropped, source_datasets(cropped.labels.meta), tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_a_source_without_frame_of_reference_is_refused(series, tmp_path):
    result = _result_on(series)
    datasets = source_datasets(result.labels.meta)
    del datasets[0].FrameOfReferenceUID
    for write in (write_seg, write_sr):
        with pytest.raises(GeometryError, match="no FrameOfReferenceUID"):
            write(result, datasets, tmp_path / "x.dcm")


def test_a_non_dicom_input_says_a_dicom_source_is_needed():
    image = read_image(HIPPO)
    with pytest.raises(InvalidArgumentError, match="need a DICOM source series"):
        source_datasets(image.meta)


def test_dicom_for_a_task_without_dicom_outputs_is_refused_before_predicting(tmp_path, capsys):
    pair = ",".join(str(REPO / "deepmia/samples/hippocampus" / f"hippocampus_00{k}.nii.gz") for k in (1, 3))
    assert main(["predict", "hippocampus_registration", pair, str(tmp_path), "--dicom"]) == 2
    assert "does not write registration results" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.shared_data
def test_a_classified_dicom_film_gets_an_sr_with_its_finding(shared_data, tmp_path):
    film = shared_data / "dicom" / "pydicom" / "RG1_J2KI.dcm"
    assert main(["predict", "pneumoniamnist", str(film), str(tmp_path), "--dicom"]) == 0
    sr = pydicom.dcmread(tmp_path / "dicom" / "RG1_J2KI.sr.dcm")
    source = pydicom.dcmread(film, stop_before_pixels=True)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID


def test_a_model_directory_codes_json_overrides_the_shipped_codes(series, tmp_path):
    shipped = load_codes()
    assert shipped["anterior"]["type"][:2] == ["5366008", "SCT"]
    model = tmp_path / "model"
    model.mkdir()
    (model / "codes.json").write_text(json.dumps({"anterior": {
        "category": ["91723000", "SCT", "Anatomical Structure"], "type": ["123", "99LOCAL", "Front part"]}}))
    codes = load_codes(model)
    assert codes["anterior"]["type"] == ["123", "99LOCAL", "Front part"] and codes["posterior"] == shipped["posterior"]
    result = _result_on(series)
    write_seg(result, source_datasets(result.labels.meta), tmp_path / "c.dcm", codes=codes)
    segments = pydicom.dcmread(tmp_path / "c.dcm").SegmentSequence
    types = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in segments]
    assert types == ["123", "5366008"]
    (model / "codes.json").write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        load_codes(model)


def _predict_on_dicom_copy(model: str, picture: Path, modality: str, folder: Path):
    """Predict ``picture`` in memory, its image pointing at a DICOM copy of it (as a DICOM input's meta does)."""
    from deepmia.tasks import load_predictor

    image = read_image(picture)
    image.meta.update(modality=modality)
    write_image(image, folder, format="dicom", series_number=5, series_description=model)
    result = load_predictor(REPO / "models" / model, device="cpu").predict(image)
    uid = _datasets(folder)[0].SeriesInstanceUID
    result.image.meta.update(format="dicom", source=str(folder), series_uid=uid)
    return result


def _meaning(name: str) -> str:
    """The code meaning the shipped table gives class ``name`` (the name itself when it has no code)."""
    return load_codes().get(name, {"type": ["", "", name]})["type"][2]


def _sr_groups(path: Path, kind: str) -> list:
    import highdicom as hd

    content = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content
    return getattr(content, f"get_{kind}_groups")()


def test_classification_sr_holds_the_finding_and_the_calibrated_probabilities(tmp_path):
    xray = REPO / "deepmia" / "samples" / "xray" / "pneumoniamnist_test_001_label0.png"
    result = _predict_on_dicom_copy("pneumoniamnist", xray, "DX", tmp_path / "src")
    written = dicom_outputs("case.png", result, tmp_path / "out", model_dir=REPO / "models" / "pneumoniamnist")
    assert written == [tmp_path / "out" / "dicom" / "case.sr.dcm", tmp_path / "out" / "dicom" / "case.report.dcm"]
    groups = {g.tracking_identifier: g for g in _sr_groups(written[0], "image_measurement")}
    assert set(groups) == {"decision", *result.class_names}
    assert groups["decision"].finding_type.meaning == _meaning(result.label)
    decided = result.class_names.index(result.label)
    assert groups["decision"].get_measurements()[0].value == pytest.approx(result.probabilities[decided], abs=1e-6)
    for name, p in zip(result.class_names, result.probabilities, strict=True):
        assert groups[name].get_measurements()[0].value == pytest.approx(float(p), abs=1e-6)
    sr = pydicom.dcmread(written[0])
    assert sr.StudyInstanceUID == _datasets(tmp_path / "src")[0].StudyInstanceUID
    assert set(_content_texts(sr, "Algorithm Name")) == {"pneumoniamnist"}
    assert _dciodvfy_errors(written[0]) == []


def test_detection_sr_holds_one_planar_roi_with_its_score_per_detection(tmp_path):
    photo = REPO / "deepmia" / "samples" / "photo" / "BloodImage_00000.jpg"
    result = _predict_on_dicom_copy("bccd", photo, "XC", tmp_path / "src")
    written = dicom_outputs("blood.jpg", result, tmp_path / "out", model_dir=REPO / "models" / "bccd")
    groups = _sr_groups(written[0], "planar_roi_measurement")
    kept = result.kept()
    assert len(groups) == len(kept) > 0
    source = _datasets(tmp_path / "src")[0]
    for group, i in zip(groups, kept, strict=True):
        x0, y0, x1, y1 = result.boxes[i]
        corners = np.asarray(group.roi.value)  # (column, row) pixel coordinates on the source image
        assert np.allclose(corners[[0, 2]], [[x0, y0], [x1, y1]], atol=1e-3)
        assert corners[:, 0].max() <= source.Columns and corners[:, 1].max() <= source.Rows
        assert group.get_measurements()[0].value == pytest.approx(float(result.scores[i]), abs=1e-6)
        assert group.finding_type.meaning == _meaning(result.class_names[int(result.labels[i])])
    assert _dciodvfy_errors(written[0]) == []
    other = _datasets(tmp_path / "src")
    other[0].Rows = 100  # a source image of another size than the detected one
    with pytest.raises(GeometryError, match="is not the source image"):
        write_sr(result, other, tmp_path / "x.dcm")


@pytest.mark.slow
def test_predict_dicom_on_a_nifti_input_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", str(MODEL), str(HIPPO), str(tmp_path / "out"), "--dicom"]) == 2
    err = capsys.readouterr().err
    assert "need a DICOM source series" in err and "hippocampus_003" in err
    assert not (tmp_path / "out" / "dicom").exists()


@pytest.mark.slow
def test_a_study_folder_gives_each_series_its_own_seg_on_its_own_series(series, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(series, study / "one")
    image = read_image(HIPPO)
    image.meta.update(modality="MR")
    write_image(image, study / "two", format="dicom", series_number=4, series_description="again")
    assert main(["predict", str(MODEL), str(study), str(tmp_path / "out"), "--dicom"]) == 0
    for folder, name in ((study / "one", "3_T1_crop"), (study / "two", "4_again")):
        seg = pydicom.dcmread(tmp_path / "out" / "dicom" / f"{name}.seg.dcm")
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == _datasets(folder)[0].SeriesInstanceUID
        assert np.array_equal(_seg_on_source_grid(tmp_path / "out" / "dicom" / f"{name}.seg.dcm", folder),
                              read_image(tmp_path / "out" / f"{name}.nii.gz", kind="label").array[0])


def _sr_volumes(path: Path) -> dict[str, float]:
    import highdicom as hd

    groups = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(path)).content.get_volumetric_roi_measurement_groups()
    return {g.tracking_identifier: float(g.get_measurements()[0].value) for g in groups}


@pytest.mark.slow
def test_export_dicom_writes_the_seg_and_sr_of_an_existing_prediction(predicted, series, tmp_path):
    out = tmp_path / "exported"
    assert main(["export", "dicom", str(predicted), str(series), str(out), "--probabilities"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hippo.prob.seg.dcm", "hippo.report.dcm", "hippo.seg.dcm",
                                                     "hippo.sr.dcm"]
    labels = read_image(predicted / "hippo.nii.gz", kind="label")
    assert np.array_equal(read_seg(out / "hippo.seg.dcm", series).array, labels.array)
    assert _sr_volumes(out / "hippo.sr.dcm") == pytest.approx(_sr_volumes(predicted / "dicom" / "hippo.sr.dcm"))
    seg = pydicom.dcmread(out / "hippo.seg.dcm", stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == _datasets(series)[0].SeriesInstanceUID
    for path in sorted(out.iterdir()):
        assert _dciodvfy_errors(path) == [], path.name


def test_export_dicom_refuses_a_folder_that_is_not_a_prediction(series, tmp_path, capsys):
    folder = tmp_path / "not_a_prediction"
    folder.mkdir()
    write_image(read_image(HIPPO), folder / "hippo.nii.gz")
    assert main(["export", "dicom", str(folder), str(series), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not a prediction folder" in err and str(folder) in err and "run.json" in err
    assert not (tmp_path / "out").exists()
    (folder / "run.json").write_text("{broken")
    with pytest.raises(InvalidArgumentError, match="run.json is not valid JSON"):
        export_prediction(folder, series, tmp_path / "out")


@pytest.mark.slow
def test_export_dicom_refuses_a_source_of_another_grid_or_without_frame_of_reference(predicted, series, tmp_path):
    image = read_image(HIPPO)
    other = tmp_path / "cropped"
    write_image(Image(image.array[:, 2:], image.affine, meta={"modality": "MR"}), other, format="dicom",
                series_number=7)
    with pytest.raises(GeometryError, match="does not match the source") as caught:
        export_prediction(predicted, other, tmp_path / "out")
    assert "hippo.seg.dcm" in str(caught.value)
    no_frame = tmp_path / "no_frame"
    no_frame.mkdir()
    for p in sorted(series.iterdir()):
        ds = pydicom.dcmread(p)
        del ds.FrameOfReferenceUID
        ds.save_as(no_frame / p.name)
    with pytest.raises(GeometryError, match="no FrameOfReferenceUID"):
        export_prediction(predicted, no_frame, tmp_path / "out")
    two = tmp_path / "two"
    shutil.copytree(other, two / "a")
    write_image(image, two / "b", format="dicom", series_number=8)
    with pytest.raises(SeriesError, match="holds no DICOM series"):
        export_prediction(predicted, two, tmp_path / "out")  # two series, neither the predicted one
    assert not list(tmp_path.glob("out/*.dcm"))
