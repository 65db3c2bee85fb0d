"""The ``pairs`` importer: images and labels matched by patterns, value maps, ROI masks, an official test set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.cli.main import main
from deepmia.data.dataset import Dataset
from deepmia.data.importers import import_dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.io import read_image

PATTERNS = [
    "image=train/img/{id}_photo.png",
    "label=train/manual/{id}_ann.gif",
    "roi=train/fov/{id}_fov.gif",
    "test_image=test/img/{id}_photo.png",
    "test_label=test/manual/{id}_ann.gif",
    "test_roi=test/fov/{id}_fov.gif",
]


def _write_source(root: Path, train=("a1", "a2", "a3", "a4"), test=("t1", "t2"), *, values=(0, 255)) -> dict:
    """RGB photos with 0/255 vessel-like lines (GIF) and a disc field of view (GIF), 12 x 10 pixels."""
    rng = np.random.default_rng(0)
    made = {}
    for part, ids in (("train", train), ("test", test)):
        for d in ("img", "manual", "fov"):
            (root / part / d).mkdir(parents=True, exist_ok=True)
        for i, case in enumerate(ids):
            photo = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
            ann = np.full((10, 12), values[0], np.uint8)
            ann[2 + i % 3, :] = values[1]
            yy, xx = np.mgrid[:10, :12]
            fov = (((yy - 5) ** 2 + (xx - 6) ** 2) < 20).astype(np.uint8) * 255
            PILImage.fromarray(photo).save(root / part / "img" / f"{case}_photo.png")
            PILImage.fromarray(ann).save(root / part / "manual" / f"{case}_ann.gif")
            PILImage.fromarray(fov).save(root / part / "fov" / f"{case}_fov.gif")
            made[case] = (photo, ann, fov)
    return made


def test_pairs_import_keeps_the_official_test_set_and_maps_values(tmp_path):
    made = _write_source(tmp_path / "src")
    report = import_dataset(
        "pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS, labels="0=background,1=vessel",
        value_map="255=1", folds=2,
    )
    ds = Dataset.load(tmp_path / "ds")
    assert report.skipped == [] and len(ds) == 6
    assert [c.name for c in ds.spec.channels] == ["RGB"]
    splits = ds.splits
    assert sorted(splits.test) == ["t1", "t2"] and len(splits.folds) == 2
    for fold in splits.folds:
        assert set(fold.train + fold.val) == {"a1", "a2", "a3", "a4"}  # test cases never in a fold
    for case_id, (photo, ann, fov) in made.items():
        case = ds.case(case_id)
        folder = "Ts" if case_id.startswith("t") else ""
        assert case.images == [f"images{folder}/{case_id}.png"] and case.label == f"labels{folder}/{case_id}.png"
        image = ds.read_image(case)
        np.testing.assert_array_equal(image.array, photo.transpose(2, 1, 0))
        label = ds.read_label(case, image=image)
        np.testing.assert_array_equal(label.array[0].T, (ann == 255).astype(np.uint8))
        roi = read_image(ds.path(case.meta["roi"]), kind="label")
        np.testing.assert_array_equal(roi.array[0].T, (fov > 0).astype(np.uint8))
        np.testing.assert_allclose(roi.affine, image.affine)


def test_unmapped_label_values_are_refused_with_the_fix(tmp_path):
    _write_source(tmp_path / "src")
    with pytest.raises(DatasetError, match=r"label values \[255\].*--value-map"):
        import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS, labels="0=background,1=vessel")


def test_case_without_label_is_skipped_and_reported(tmp_path):
    _write_source(tmp_path / "src", train=("a1", "a2", "a3"))
    (tmp_path / "src/train/manual/a2_ann.gif").unlink()
    report = import_dataset(
        "pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS[:3], labels="0=bg,1=vessel",
        value_map="255=1", folds=2,
    )
    assert report.skipped == [("train/img/a2_photo.png", "no label file matching 'train/manual/{id}_ann.gif'")]
    assert [c.id for c in report.dataset.cases] == ["a1", "a3"] and report.dataset.splits.test == []


def test_same_id_in_training_and_test_is_refused(tmp_path):
    _write_source(tmp_path / "src", train=("a1", "a2"), test=("a2",))
    with pytest.raises(DatasetError, match="both the training and the test set"):
        import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS, labels="0=bg,1=v",
                       value_map="255=1", folds=2)


@pytest.mark.parametrize(
    "patterns, message",
    [
        (["image=train/img/x.png", "label=train/manual/{id}_ann.gif"], "exactly once"),
        (["imgae=train/img/{id}_photo.png"], "did you mean 'image'"),
        (["image=train/img/{id}_photo.png"], "need a label pattern"),
        ([*PATTERNS[:3], "test_image=test/img/{id}_photo.png"], "need a test_label pattern"),
        (["image:train/img/{id}.png"], "KIND=PATTERN"),
    ],
)
def test_bad_patterns_are_refused(tmp_path, patterns, message):
    _write_source(tmp_path / "src")
    with pytest.raises(InvalidArgumentError, match=message):
        import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=patterns, labels="0=bg,1=v")


def test_label_of_another_size_is_refused(tmp_path):
    _write_source(tmp_path / "src", train=("a1", "a2"))
    PILImage.fromarray(np.zeros((9, 12), np.uint8)).save(tmp_path / "src/train/manual/a2_ann.gif")
    with pytest.raises(DatasetError, match=r"case 'a2': label map shape \(12, 9\) differs"):
        import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS[:3], labels="0=bg,1=v",
                       value_map="255=1", folds=2)


def test_cli_import_pairs(tmp_path, capsys):
    _write_source(tmp_path / "src")
    args = ["dataset", "import", "pairs", str(tmp_path / "src"), str(tmp_path / "ds"), "--labels", "0=bg,1=vessel",
            "--value-map", "255=1", "--folds", "2", "--channel", "RGB:OP", "--json"]
    for p in PATTERNS:
        args += ["--pattern", p]
    assert main(args) in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 6 and summary["splits"] == {"folds": 2, "test": 2}
    assert Dataset.load(tmp_path / "ds").spec.channels[0].modality == "OP"


@pytest.mark.shared_data
def test_drive_subset(tmp_path, shared_data):
    patterns = [
        "image=training/images/{id}_training.tif", "label=training/1st_manual/{id}_manual1.gif",
        "roi=training/mask/{id}_training_mask.gif", "test_image=testing/images/{id}_test.tif",
        "test_label=testing/1st_manual/{id}_manual1.gif", "test_roi=testing/mask/{id}_test_mask.gif",
    ]
    report = import_dataset("pairs", shared_data / "drive", tmp_path / "drive", patterns=patterns, limit=3,
                            labels="0=background,1=vessel", value_map="255=1", folds=2)
    ds = report.dataset
    assert [c.id for c in ds.cases] == ["21", "22", "23", "01", "02", "03"] and ds.splits.test == ["01", "02", "03"]
    image = ds.read_image("01")
    assert image.shape == (3, 565, 584)
    source = read_image(shared_data / "drive/testing/images/01_test.tif")
    np.testing.assert_array_equal(image.array, source.array)
    label = ds.read_label("01", image=image)
    roi = read_image(ds.path(ds.case("01").meta["roi"]), kind="label").array[0] > 0
    fraction = label.array[0][roi].mean()
    assert 0.05 < fraction < 0.2  # retinal vessels: about a tenth of the field of view
    assert not label.array[0][~roi].any() or label.array[0][~roi].mean() < 0.01


def test_raster_label_takes_the_image_geometry_and_says_so(tmp_path):
    from deepmia.image import Image
    from deepmia.io import write_image

    _write_source(tmp_path / "src", train=("a1", "a2"), test=())
    for case in ("a1", "a2"):  # photos with a known 0.5 mm pixel size (written by deepmia); the GIF labels: none
        path = tmp_path / "src/train/img" / f"{case}_photo.png"
        photo = read_image(path)
        write_image(Image(photo.array, np.diag([0.5, 0.5, 1.0, 1.0])), path)
    report = import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS[:3], labels="0=bg,1=v",
                            value_map="255=1", folds=2)
    assert any("label map a1_ann.gif took its image's geometry" in n for n in report.notes)
    ds = report.dataset
    image = ds.read_image("a1")
    assert image.spacing == pytest.approx((0.5, 0.5), abs=1e-3)
    np.testing.assert_allclose(ds.read_label("a1", image=image).affine, image.affine)


def test_png_print_resolution_is_not_a_spacing_in_pairs(tmp_path):
    _write_source(tmp_path / "src", train=("a1", "a2"), test=())
    for case in ("a1", "a2"):  # 50.8 dpi is a print resolution, not 0.5 mm pixels
        path = tmp_path / "src/train/img" / f"{case}_photo.png"
        PILImage.open(path).save(path, dpi=(50.8, 50.8))
    report = import_dataset("pairs", tmp_path / "src", tmp_path / "ds", patterns=PATTERNS[:3], labels="0=bg,1=v",
                            value_map="255=1", folds=2)
    image = report.dataset.read_image("a1")
    assert image.meta.get("spacing_unknown") is True and not report.notes


def test_one_pattern_per_channel_file(tmp_path):
    src = tmp_path / "src"
    made = _write_source(src, train=("a1", "a2", "a3"), test=())
    (src / "train/t2").mkdir()
    for case in ("a1", "a3"):  # a2 has no second channel
        PILImage.fromarray(made[case][0][..., 1]).save(src / "train/t2" / f"{case}.png")
    report = import_dataset(
        "pairs", src, tmp_path / "ds", patterns=[PATTERNS[0], "image=train/t2/{id}.png", *PATTERNS[1:3]],
        labels="0=bg,1=v", value_map="255=1", channels=["photo:XC", "green:XC"], folds=2,
    )
    assert report.skipped == [("train/img/a2_photo.png", "no channel 1 file matching 'train/t2/{id}.png'")]
    ds = report.dataset
    assert ds.case("a3").images == ["images/a3_0000.png", "images/a3_0001.png"]
    image = ds.read_image("a3")
    assert image.num_channels == 4  # an RGB file and a grey file, stacked
    np.testing.assert_array_equal(image.array[3], made["a3"][0][..., 1].T)


def test_patient_regex_keeps_both_eyes_of_a_child_on_one_side(tmp_path, capsys):
    """CHASE_DB1-style ids (Image_01L / Image_01R): without --patient-regex the two eyes could land in different
    folds; with it every fold holds both or neither."""
    eyes = tuple(f"Image_{i:02d}{side}" for i in range(1, 5) for side in "LR")
    _write_source(tmp_path / "src", train=eyes, test=("Image_09L", "Image_09R"))
    args = ["dataset", "import", "pairs", str(tmp_path / "src"), str(tmp_path / "ds"), "--labels", "0=bg,1=vessel",
            "--value-map", "255=1", "--folds", "2", "--patient-regex", r"^(Image_\d+)", "--json"]
    for p in PATTERNS:
        args += ["--pattern", p]
    assert main(args) == 0
    ds = Dataset.load(tmp_path / "ds")
    assert ds.case("Image_01L").patient_id == ds.case("Image_01R").patient_id == "Image_01"
    for fold in ds.splits.folds:
        val = set(fold.val)
        assert all((f"Image_{i:02d}L" in val) == (f"Image_{i:02d}R" in val) for i in range(1, 5))
    with pytest.raises(DatasetError, match="does not match patient_regex"):
        import_dataset("pairs", tmp_path / "src", tmp_path / "ds2", patterns=PATTERNS, labels="0=bg,1=vessel",
                       value_map="255=1", folds=2, patient_regex=r"^(Eye_\d+)")
