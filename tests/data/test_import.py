"""Importers on real public data (MSD hippocampus, MedMNIST, BCCD VOC, a DICOM study) and on built layouts."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.data.dataset import Dataset
from deepmia.data.importers import import_dataset
from deepmia.data.stats import fingerprint
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.image import Image
from deepmia.io import read_image, write_image

HIPPO_LABELS = "0=background,1=anterior,2=posterior"


# ----------------------------------------------------------------------------- MSD
@pytest.mark.shared_data
def test_msd_hippocampus_subset_copied(tmp_path, shared_data):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    names = sorted(p.name for p in (shared_data / "hippocampus/labels").iterdir())[:10]
    for n in names:
        shutil.copy(shared_data / "hippocampus/labels" / n, src / "labels" / n)
        if (shared_data / "hippocampus/images" / n).exists():
            shutil.copy(shared_data / "hippocampus/images" / n, src / "images" / n)
    shutil.copy(shared_data / "hippocampus/images/hippocampus_118.nii.gz", src / "images")
    report = import_dataset("msd", src, tmp_path / "out", labels=HIPPO_LABELS, channels=["T1:MR"])
    ds = Dataset.load(tmp_path / "out")
    skipped = dict(report.skipped)
    assert skipped["images/hippocampus_118.nii.gz"] == "image without a label map"
    assert skipped["labels/hippocampus_010.nii.gz"] == "label map without an image"
    assert len(ds) == 10 - 1  # 010 has no image
    assert ds.spec.labels == {"0": "background", "1": "anterior", "2": "posterior"}
    case = ds.cases[0]
    assert not ds.path(case.images[0]).is_symlink()
    img, lab = ds.read_image(case), ds.read_label(case)
    orig = read_image(shared_data / "hippocampus/images" / Path(case.images[0]).name)
    np.testing.assert_array_equal(img.array, orig.array)
    assert set(np.unique(lab.array)) <= {0, 1, 2}


@pytest.mark.shared_data
def test_msd_hippocampus_all_linked(tmp_path, shared_data):
    report = import_dataset("msd", shared_data / "hippocampus", tmp_path / "h", link=True, labels=HIPPO_LABELS)
    ds = report.dataset
    assert len(ds) == 260 and len(ds.patients) == 260
    assert {item for item, _ in report.skipped} == {
        "images/hippocampus_118.nii.gz", "labels/hippocampus_010.nii.gz", "labels/hippocampus_281.nii.gz"}
    assert all(ds.path(c.images[0]).is_symlink() for c in ds.cases)
    assert len(Dataset.load(tmp_path / "h")) == 260


def test_msd_with_dataset_json_multichannel_and_shape_check(tmp_path):
    src = tmp_path / "Task99"
    rng = np.random.default_rng(1)
    training = []
    for i in range(2):
        write_image(Image(rng.random((2, 5, 6, 7)).astype(np.float32)), src / f"imagesTr/t_{i:03d}.nii.gz")
        write_image(Image(np.ones((1, 5, 6, 7), np.uint8), kind="label"), src / f"labelsTr/t_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/t_{i:03d}.nii.gz", "label": f"./labelsTr/t_{i:03d}.nii.gz"})
    training.append({"image": "./imagesTr/t_009.nii.gz", "label": "./labelsTr/t_009.nii.gz"})
    (src / "dataset.json").write_text(json.dumps({
        "name": "Toy", "licence": "CC-BY-SA 4.0", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "lesion"}, "training": training, "test": ["./imagesTs/t_100.nii.gz"]}))
    report = import_dataset("msd", src, tmp_path / "out")
    ds = report.dataset
    assert [c.name for c in ds.spec.channels] == ["FLAIR", "T1w"]
    assert {c.modality for c in ds.spec.channels} == {"MR"}
    assert ds.spec.license == "CC-BY-SA 4.0"
    img = ds.read_image(ds.cases[1])
    np.testing.assert_allclose(img.array, read_image(src / "imagesTr/t_001.nii.gz").array)
    assert any("t_009" in item for item, _ in report.skipped)
    assert any("1 test image" in n for n in report.notes)
    write_image(Image(np.ones((1, 5, 6, 6), np.uint8), kind="label"), src / "labelsTr/t_001.nii.gz")
    with pytest.raises(DatasetError, match="case 't_001': label map shape"):
        import_dataset("msd", src, tmp_path / "out2")


def test_msd_needs_label_names_and_empty_destination(tmp_path):
    src = tmp_path / "s"
    write_image(Image(np.zeros((1, 3, 3, 3), np.float32)), src / "images/a.nii.gz")
    write_image(Image(np.zeros((1, 3, 3, 3), np.uint8), kind="label"), src / "labels/a.nii.gz")
    with pytest.raises(DatasetError, match="no label names"):
        import_dataset("msd", src, tmp_path / "o")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    with pytest.raises(DatasetError, match="not an empty folder"):
        import_dataset("msd", src, tmp_path / "full", labels="0=bg")
    with pytest.raises(InvalidArgumentError, match="do not apply to format 'msd'"):
        import_dataset("msd", src, tmp_path / "o", classes=["a"])
    with pytest.raises(InvalidArgumentError, match="unknown dataset format 'vco'; did you mean 'voc'"):
        import_dataset("vco", src, tmp_path / "o")


# ----------------------------------------------------------------------------- MedMNIST
@pytest.mark.slow
@pytest.mark.shared_data
def test_medmnist_pneumonia_counts(tmp_path, shared_data):
    src = shared_data / "medmnist/pneumoniamnist.npz"
    ds = import_dataset("medmnist", src, tmp_path / "p").dataset
    npz = np.load(src)
    fold = ds.splits.folds[0]
    assert (len(fold.train), len(fold.val), len(ds.splits.test)) == (4708, 524, 624)
    assert ds.spec.labels == ["normal", "pneumonia"]
    assert ds.spec.positive_class == "pneumonia"
    for split, ids in (("train", fold.train), ("val", fold.val), ("test", ds.splits.test)):
        counts = Counter(ds.case(i).class_ for i in ids)
        expected = Counter(npz[f"{split}_labels"].ravel().tolist())
        assert counts == expected
    # README: train 1214/3494, val 135/389, test 234/390
    assert Counter(ds.case(i).class_ for i in fold.train) == {0: 1214, 1: 3494}
    case = ds.case("test_00007")
    with PILImage.open(ds.path(case.images[0])) as im:
        np.testing.assert_array_equal(np.asarray(im), npz["test_images"][7])


@pytest.mark.shared_data
def test_medmnist_adrenal_3d(tmp_path, shared_data):
    src = shared_data / "medmnist/adrenalmnist3d.npz"
    report = import_dataset("medmnist", src, tmp_path / "a", limit=15)
    ds = report.dataset
    npz = np.load(src)
    assert len(ds) == 45 and len(ds.splits.test) == 15
    assert any("1173 train sample" in n for n in report.notes)  # 1188 - 15
    img = ds.read_image("val_00003")
    assert img.spatial_shape == (28, 28, 28) and img.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(img.array[0], npz["val_images"][3])
    assert ds.case("val_00003").class_ == int(npz["val_labels"][3, 0])
    fp = fingerprint(ds)
    assert sum(fp["labels"].values()) == 45


def test_medmnist_multilabel_and_unknown_names(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 3))
    np.savez(tmp_path / "toymnist.npz", **arrays)
    with pytest.raises(DatasetError, match="class names of 'toymnist.npz' are not known.*pass --classes"):
        import_dataset("medmnist", tmp_path / "toymnist.npz", tmp_path / "o")
    ds = import_dataset("medmnist", tmp_path / "toymnist.npz", tmp_path / "o", classes=["a", "b", "c"]).dataset
    assert ds.spec.positive_class is None
    assert ds.case("train_00002").class_ == np.flatnonzero(arrays["train_labels"][2]).tolist()
    assert ds.spec.channels[0].name == "RGB"


# ----------------------------------------------------------------------------- folder of classes
def test_folder_per_class(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for cls, n in (("normal", 4), ("tumour", 2)):
        (src / cls).mkdir(parents=True)
        for i in range(n):
            PILImage.fromarray(rng.integers(0, 255, (9, 7), dtype=np.uint8)).save(src / cls / f"pt{i % 2}_{cls}{i}.png")
    write_image(Image(np.zeros((1, 4, 4, 4), np.float32)), src / "tumour/pt5_vol.nii.gz")
    (src / "tumour/notes.txt").write_text("not an image")
    report = import_dataset("folder", src, tmp_path / "o", patient_regex=r"^(pt\d+)_", channels=["US:US"])
    ds = report.dataset
    assert ds.spec.labels == ["normal", "tumour"]
    assert len(ds) == 7 and ds.patients.keys() == {"pt0", "pt1", "pt5"}
    assert ds.case("tumour/pt5_vol").class_ == 1
    assert report.skipped == [("tumour/notes.txt", "not an image file (by suffix)")]
    assert ds.read_image("normal/pt1_normal1").spatial_shape == (7, 9)  # x = column
    with pytest.raises(DatasetError, match="does not match patient_regex"):
        import_dataset("folder", src, tmp_path / "o2", patient_regex=r"^(px\d+)_")
    with pytest.raises(DatasetError, match="class folder\\(s\\) \\['benign'\\] not found"):
        import_dataset("folder", src, tmp_path / "o3", classes=["normal", "tumour", "benign"])


# ----------------------------------------------------------------------------- VOC and COCO
@pytest.fixture(scope="module")
def bccd(tmp_path_factory, shared_data):
    return import_dataset("voc", shared_data / "bccd/BCCD", tmp_path_factory.mktemp("bccd") / "b", link=True)


@pytest.mark.shared_data
def test_voc_bccd(bccd, shared_data):
    ds = bccd.dataset
    assert len(ds) == 364 and bccd.skipped == [] and bccd.notes == []
    fold = ds.splits.folds[0]
    assert (len(fold.train), len(fold.val), len(ds.splits.test)) == (205, 87, 72)
    counts = Counter(b.label for c in ds.cases for b in c.boxes)
    assert counts == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    # first object of BloodImage_00000: WBC xmin 260 ymin 177 xmax 491 ymax 376 (1-based, inclusive)
    first = ds.case("BloodImage_00000").boxes[0]
    assert (first.label, first.box) == ("WBC", [259.0, 176.0, 491.0, 376.0])
    assert ds.case("BloodImage_00000").shape == [640, 480]
    img = ds.read_image("BloodImage_00000")
    assert img.spatial_shape == (640, 480)


@pytest.mark.shared_data
def test_voc_clips_and_refuses(tmp_path, shared_data):
    src = tmp_path / "voc"
    for d in ("Annotations", "JPEGImages"):
        (src / d).mkdir(parents=True)
    for n in ("BloodImage_00000", "BloodImage_00001"):
        shutil.copy(shared_data / f"bccd/BCCD/JPEGImages/{n}.jpg", src / "JPEGImages")
        shutil.copy(shared_data / f"bccd/BCCD/Annotations/{n}.xml", src / "Annotations")
    xml = src / "Annotations/BloodImage_00001.xml"
    tree = ET.parse(xml)
    tree.getroot().find("object/bndbox/xmax").text = "700"
    tree.write(xml)
    report = import_dataset("voc", src, tmp_path / "o")
    assert len(report.notes) == 1 and "case 'BloodImage_00001'" in report.notes[0] and "clipped" in report.notes[0]
    assert max(b.box[2] for b in report.dataset.case("BloodImage_00001").boxes) == 640
    tree.getroot().find("object/bndbox/xmin").text = "650"
    tree.write(xml)
    with pytest.raises(DatasetError, match="case 'BloodImage_00001': box .* lies outside the image"):
        import_dataset("voc", src, tmp_path / "o2")
    tree.getroot().find("object/bndbox/xmin").text = "10"
    tree.getroot().find("object/name").text = "Neutrophil"
    tree.write(xml)
    with pytest.raises(DatasetError, match="case 'BloodImage_00001' has a box of unknown class 'Neutrophil'"):
        import_dataset("voc", src, tmp_path / "o3", classes=["RBC", "WBC", "Platelets"])


def _coco_from(ds: Dataset, ids: list[str]) -> dict:
    names = ds.spec.labels
    coco = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
    for i, cid in enumerate(ids):
        case = ds.case(cid)
        coco["images"].append({"id": i, "file_name": Path(case.images[0]).name, "width": case.shape[0],
                               "height": case.shape[1]})
        for b in case.boxes:
            x0, y0, x1, y1 = b.box
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i,
                                        "category_id": names.index(b.label) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                        "iscrowd": 0})
    return coco


@pytest.mark.shared_data
def test_coco_from_bccd(bccd, tmp_path, shared_data):
    ds = bccd.dataset
    ids = [c.id for c in ds.cases[:6]]
    coco = _coco_from(ds, ids)
    coco["images"].append({"id": 99, "file_name": "BloodImage_00010.jpg", "width": 640, "height": 480})
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    report = import_dataset("coco", path, tmp_path / "o", images=shared_data / "bccd/BCCD/JPEGImages")
    out = report.dataset
    assert out.spec.labels == ds.spec.labels
    for cid in ids:
        assert out.case(cid).boxes == ds.case(cid).boxes
    assert out.case("BloodImage_00010").boxes == []
    assert report.notes == ["1 image(s) without annotations imported with no boxes"]
    coco["annotations"][0]["bbox"][2] = 0
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=f"case '{ids[0]}': box .* zero or negative size"):
        import_dataset("coco", path, tmp_path / "o2", images=shared_data / "bccd/BCCD/JPEGImages")
    coco["annotations"][0]["category_id"] = 42
    path.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="unknown category id 42"):
        import_dataset("coco", path, tmp_path / "o3", images=shared_data / "bccd/BCCD/JPEGImages")


# ----------------------------------------------------------------------------- DICOM
@pytest.mark.shared_data
def test_dicom_mr_study(tmp_path, shared_data):
    report = import_dataset("dicom", shared_data / "dicom/mr_study", tmp_path / "d")
    ds = report.dataset
    assert len(ds) == 5 and set(ds.patients) == {"PGBM-003"}
    assert len({c.meta["series_uid"] for c in ds.cases}) == 5
    assert [item for item, _ in report.skipped] == ["README.txt"]
    crop = next(c for c in ds.cases if c.meta["description"] == "HippoCrop")
    img = ds.read_image(crop)
    ref = read_image(shared_data / "dicom/mr_study" / crop.meta["source"], series_uid=crop.meta["series_uid"])
    assert img.spatial_shape == ref.spatial_shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    with pytest.raises(InvalidArgumentError, match="unknown task 'segmentation'"):
        import_dataset("dicom", shared_data / "dicom/mr_study", tmp_path / "d2", task="segmentation")


def test_folder_with_one_channel_named_per_colour_says_an_rgb_file_is_one_channel(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        PILImage.fromarray(np.zeros((6, 6, 3), np.uint8)).save(src / cls / "x.png")
    with pytest.raises(DatasetError, match=r"has 1 image\(s\) but .* 3 channel.*colour \(RGB\) file is one channel"):
        import_dataset("folder", src, tmp_path / "o", channels=["R:US", "G:US", "B:US"])
    ds = import_dataset("folder", src, tmp_path / "o2", channels=["RGB:US"]).dataset
    assert [c.name for c in ds.spec.channels] == ["RGB"]
