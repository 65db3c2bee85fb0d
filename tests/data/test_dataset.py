"""dataset.json validation, loading, reading, and the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepmia.data.dataset import Dataset, Splits, check_leakage
from deepmia.data.importers import import_dataset
from deepmia.data.stats import fingerprint
from deepmia.errors import DatasetError, SplitLeakageError
from deepmia.image import Image
from deepmia.io import write_image


def _seg_dataset(root: Path, n: int = 3, *, shape=(6, 5, 4), label_shape=None) -> Dataset:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        write_image(Image(rng.normal(100, 10, (1, *shape)).astype(np.float32)), root / f"images/c{i}.nii.gz")
        lab = np.zeros((1, *(label_shape or shape)), np.int16)
        lab[0, :2] = 1
        lab[0, -1, -1] = 2 * (i % 2)
        write_image(Image(lab, kind="label"), root / f"labels/c{i}.nii.gz")
        cases.append({"id": f"c{i}", "patient_id": f"p{i // 2}", "images": [f"images/c{i}.nii.gz"],
                      "label": f"labels/c{i}.nii.gz"})
    ds = Dataset.create(root, name="toy", task="segmentation", channels=[{"name": "T1", "modality": "MR"}],
                        labels={"0": "background", "1": "a", "2": "b"}, cases=cases)
    ds.save()
    return ds


def test_roundtrip_and_access(tmp_path):
    _seg_dataset(tmp_path)
    ds = Dataset.load(tmp_path)
    assert [c.id for c in ds.cases] == ["c0", "c1", "c2"]
    assert ds.patients == {"p0": ["c0", "c1"], "p1": ["c2"]}
    img = ds.read_image("c1")
    lab = ds.read_label(ds.case("c1"), image=img)
    assert img.spatial_shape == lab.spatial_shape == (6, 5, 4)
    assert lab.kind == "label" and np.issubdtype(lab.dtype, np.integer)
    assert img.meta["patient_id"] == "p0"
    with pytest.raises(DatasetError, match="did you mean 'c1'"):
        ds.case("c11")


def test_fingerprint_seg(tmp_path):
    ds = _seg_dataset(tmp_path, n=4)
    fp = fingerprint(ds)
    assert fp["num_cases"] == 4 and fp["num_patients"] == 2
    assert fp["shape"][0] == {"min": 6, "median": 6, "max": 6}
    fractions = [v["voxel_fraction"] for v in fp["labels"].values()]
    assert sum(fractions) == pytest.approx(1.0)
    assert fp["labels"]["2"]["cases_present"] == 2
    it = fp["channels"][0]["intensity"]
    assert 95 < it["mean"] < 105 and 8 < it["std"] < 12
    assert it["min"] <= it["percentile_00_5"] <= it["median"] <= it["percentile_99_5"] <= it["max"]
    json.dumps(fp)  # plain data


def test_label_shape_mismatch_names_case(tmp_path):
    ds = _seg_dataset(tmp_path, n=1, label_shape=(6, 5, 3))
    with pytest.raises(DatasetError, match="case 'c0'.*label map shape"):
        fingerprint(ds)


def _write_spec(root: Path, **changes) -> Path:
    spec = json.loads((root / "dataset.json").read_text())
    spec.update(changes)
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_missing_files_listed(tmp_path):
    _seg_dataset(tmp_path)
    (tmp_path / "images/c1.nii.gz").unlink()
    (tmp_path / "labels/c2.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"2 referenced file\(s\) missing: c1: images/c1.nii.gz; c2: labels"):
        Dataset.load(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "segmentaton"}, r"task: Input should be"),
        ({"labels": ["a", "b"]}, "segmentation labels must map"),
        ({"cases": [{"id": "x", "patient_id": "p", "images": []}]}, r"cases\[0\] \(case 'x'\).images"),
        ({"cases": [{"id": "x", "patient_id": "p", "images": ["a"], "label": "l", "colour": 1}]}, "colour"),
    ],
)
def test_invalid_fields_name_file_and_field(tmp_path, changes, message):
    _seg_dataset(tmp_path)
    _write_spec(tmp_path, **changes)
    with pytest.raises(DatasetError, match=message) as info:
        Dataset.load(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value)


def test_semantic_errors(tmp_path):
    base = {"name": "d", "channels": [{"name": "RGB"}]}
    case = {"id": "a", "patient_id": "p", "images": ["a.png"]}
    with pytest.raises(DatasetError, match="duplicate case id 'a'"):
        Dataset.create(tmp_path, task="classification", labels=["x"], cases=[{**case, "class": 0}] * 2, **base)
    with pytest.raises(DatasetError, match="case 'a' has class index 2"):
        Dataset.create(tmp_path, task="classification", labels=["x", "y"], cases=[{**case, "class": 2}], **base)
    with pytest.raises(DatasetError, match="case 'a' has no class"):
        Dataset.create(tmp_path, task="classification", labels=["x", "y"], cases=[case], **base)
    box = {"label": "cell", "box": [0, 0, 5, 5]}
    with pytest.raises(DatasetError, match="case 'a' has a box of unknown class 'cell'"):
        Dataset.create(tmp_path, task="detection", labels=["rbc"], cases=[{**case, "boxes": [box]}], **base)
    with pytest.raises(DatasetError, match="zero or negative size"):
        Dataset.create(tmp_path, task="detection", labels=["cell"],
                       cases=[{**case, "boxes": [{"label": "cell", "box": [3, 0, 3, 5]}]}], **base)
    with pytest.raises(DatasetError, match="case 'a': box .* extends outside the image of shape \\[4, 4\\]"):
        Dataset.create(tmp_path, task="detection", labels=["cell"], cases=[{**case, "boxes": [box], "shape": [4, 4]}],
                       **base)
    with pytest.raises(DatasetError, match="2 image\\(s\\) but the dataset has 1 channel"):
        Dataset.create(tmp_path, task="unlabeled", cases=[{**case, "images": ["a", "b"]}], **base)
    with pytest.raises(DatasetError, match="must be relative"):
        Dataset.create(tmp_path, task="unlabeled", cases=[{**case, "images": ["../a.png"]}], **base)


def test_leaky_splits_json_refused_on_load(tmp_path):
    _seg_dataset(tmp_path)  # c0, c1 belong to p0
    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["c0", "c2"], "val": ["c1"]}]}))
    with pytest.raises(SplitLeakageError, match="patient 'p0'.*fold 0 train, fold 0 val"):
        Dataset.load(tmp_path)
    (tmp_path / "splits.json").write_text(json.dumps({"folds": [{"train": ["c0", "c1"], "val": ["c2"]}]}))
    ds = Dataset.load(tmp_path)
    assert ds.splits.folds[0].val == ["c2"]
    ds.save()  # splits move into dataset.json
    assert not (tmp_path / "splits.json").exists()
    assert Dataset.load(tmp_path).splits.folds[0].val == ["c2"]


def test_check_leakage_sides():
    patient_of = {"a": "p1", "b": "p1", "c": "p2", "d": "p3"}
    check_leakage(Splits(folds=[{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a", "b"]}],
                         test=["d"]), patient_of)
    with pytest.raises(SplitLeakageError, match="'p1'.*fold 0 train, test"):
        check_leakage(Splits(folds=[{"train": ["a"], "val": ["c"]}], test=["b"]), patient_of)
    with pytest.raises(SplitLeakageError, match="'p1' is in the validation set of several folds"):
        check_leakage(Splits(folds=[{"train": ["c"], "val": ["a"]}, {"train": ["d"], "val": ["b"]}]), patient_of)
    with pytest.raises(DatasetError, match="unknown case id.*zz"):
        check_leakage(Splits(test=["zz"]), patient_of)


@pytest.mark.shared_data
def test_fingerprint_real_hippocampus(tmp_path, shared_data):
    ds = import_dataset("msd", shared_data / "hippocampus", tmp_path / "h", link=True, limit=8,
                        labels="0=background,1=anterior,2=posterior").dataset
    fp = fingerprint(ds)
    assert fp["num_cases"] == 8 and fp["spatial_dims"] == 3
    assert all(s == {"min": 1.0, "median": 1.0, "max": 1.0} for s in fp["spacing"])
    # README: shapes 31-43 x 40-59 x 24-47
    assert 31 <= fp["shape"][0]["min"] and fp["shape"][0]["max"] <= 43
    assert 0 < fp["labels"]["1"]["voxel_fraction"] < 0.1 and fp["labels"]["2"]["cases_present"] == 8
    assert fp["channels"][0]["intensity_foreground"]["voxels"] < fp["channels"][0]["intensity"]["voxels"]
