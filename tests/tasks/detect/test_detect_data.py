"""Detection data: boxes follow the pixels through augmentation; bad input is refused or reported explicitly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepmia.data.dataset import Dataset
from deepmia.data.importers import import_dataset
from deepmia.errors import DatasetError
from deepmia.tasks.detect.data import (
    Augment,
    Sample,
    apply_augmentation,
    batches,
    crop_boxes,
    fingerprint,
    load_samples,
    mirror_boxes,
    sample_augmentation,
)
from deepmia.tasks.detect.train import plan_dataset


def _bright_box(mask: np.ndarray) -> list[float]:
    """Corner box of the pixels above half the maximum (axis 0 first)."""
    idx = np.argwhere(mask > 0.5 * mask.max())
    return [*idx.min(axis=0).tolist(), *(idx.max(axis=0) + 1).tolist()]


def test_augmented_boxes_stay_on_their_objects(shapes_dataset):
    plan = plan_dataset(shapes_dataset)
    rng = np.random.default_rng(0)
    image = np.zeros((1, 64, 64), np.float32)
    image[0, 10:22, 30:50] = 5.0  # x 10..22, y 30..50
    sample = Sample("s", image, np.array([[10, 30, 22, 50]], np.float32), np.array([1]), (64, 64))
    checked = 0
    for _ in range(30):
        aug = sample_augmentation(sample, plan, rng)
        out, boxes, labels = apply_augmentation(sample, aug, plan)
        assert out.shape == (1, *plan.input_size)
        if len(boxes) and (boxes[0, 2:] - boxes[0, :2]).min() > 4 and boxes[0, :2].min() > 0 and \
                (boxes[0, 2:] < np.array(plan.input_size)).all():
            signal = (out[0] - aug.intensity_shift) / aug.intensity_scale
            np.testing.assert_allclose(_bright_box(signal), boxes[0], atol=1.5)
            assert labels.tolist() == [1]
            checked += 1
    assert checked >= 10


def test_identity_augmentation_and_mirror_inverse():
    boxes = np.array([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 10.0, 3.0]])
    np.testing.assert_allclose(mirror_boxes(mirror_boxes(boxes, 1, 12), 1, 12), boxes)
    assert mirror_boxes(boxes, 0, 10)[1].tolist() == [0.0, 0.0, 10.0, 3.0]
    kept, labels = crop_boxes(boxes, np.array([0, 1]), (4, 0), (8, 8), min_visible=0.5)
    assert labels.tolist() == [1] and kept.tolist() == [[0.0, 0.0, 6.0, 3.0]]  # 1st box: 1/4 visible, dropped


def test_identity_parameters_return_the_image(shapes_dataset):
    plan = plan_dataset(shapes_dataset)
    samples, _ = load_samples(shapes_dataset, shapes_dataset.splits.folds[0].train[:1], plan)
    s = samples[0]
    out, boxes, labels = apply_augmentation(s, Augment(1.0, (0, 0), (), 1.0, 0.0), plan)
    np.testing.assert_array_equal(out, s.image)
    np.testing.assert_allclose(boxes, s.boxes)


def test_negative_images_train_as_background(shapes_dataset):
    plan = plan_dataset(shapes_dataset)
    fp = fingerprint(shapes_dataset, shapes_dataset.splits.folds[0].train)
    assert fp["negatives"] == 2
    samples, _ = load_samples(shapes_dataset, shapes_dataset.splits.folds[0].train, plan)
    negative = [s for s in samples if len(s.boxes) == 0]
    assert len(negative) == 2
    x, targets = next(batches(negative, plan, seed=0))
    assert x.shape[0] == 2 and all(t["box"].shape == (0, 4) for t in targets)


def _edit_case(root, case_id, box):
    data = json.loads((root / "dataset.json").read_text())
    case = next(c for c in data["cases"] if c["id"] == case_id)
    case["boxes"] = [box]
    return data, case


def test_box_outside_the_image_is_refused(shapes_dataset):
    root = shapes_dataset.root
    data, case = _edit_case(root, "img000", {"label": "bar", "box": [50, 10, 70, 20]})
    case.pop("shape")  # without the recorded shape the dataset cannot check; training reads the image and must
    (root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"img000.*outside the image of size \[64, 64\]"):
        plan_dataset(Dataset.load(root))


def test_zero_area_box_and_unknown_class_are_refused(shapes_dataset):
    root = shapes_dataset.root
    data, _ = _edit_case(root, "img001", {"label": "bar", "box": [5, 5, 5, 9]})
    (root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="img001.*zero or negative size"):
        Dataset.load(root)
    data, _ = _edit_case(root, "img001", {"label": "circle", "box": [5, 5, 9, 9]})
    (root / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="img001.*unknown class 'circle'"):
        Dataset.load(root)


def test_voc_import_clips_and_reports_boxes_outside(tmp_path):
    from PIL import Image as PILImage

    src = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (src / sub).mkdir(parents=True)
    PILImage.fromarray(np.zeros((40, 50, 3), np.uint8)).save(src / "JPEGImages" / "a.jpg")
    box = "<xmin>40</xmin><ymin>5</ymin><xmax>60</xmax><ymax>20</ymax>"  # reaches 10 px beyond the right edge
    obj = f"<object><name>cell</name><bndbox>{box}</bndbox></object>"
    (src / "Annotations" / "a.xml").write_text(f"<annotation><filename>a.jpg</filename>{obj}</annotation>")
    report = import_dataset("voc", src, tmp_path / "ds")
    assert report.dataset.cases[0].boxes[0].box == [39.0, 4.0, 50.0, 20.0]
    assert any("a" in note and "clip" in note for note in report.notes)


def test_ignore_boxes_leave_training_targets_and_the_reference(shapes_dataset):
    from deepmia.tasks.detect.evaluate import reference_of

    root = shapes_dataset.root
    data = json.loads((root / "dataset.json").read_text())
    case = next(c for c in data["cases"] if c["id"] == "img000")
    case["boxes"][0]["ignore"] = True
    (root / "dataset.json").write_text(json.dumps(data))
    ds = Dataset.load(root)
    samples, ignored = load_samples(ds, ["img000"], plan_dataset(ds))
    assert ignored == 1 and len(samples[0].boxes) == len(case["boxes"]) - 1
    ref, n = reference_of(ds, ["img000"])
    assert n == 1 and ref["img000"]["ignore_boxes"].tolist() == [case["boxes"][0]["box"]]
