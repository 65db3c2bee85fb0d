"""Weighted box fusion, mirror passes and the COCO results format."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.tasks.detect.predict import (
    categories_of,
    mirror_passes,
    to_coco_results,
    weighted_box_fusion,
    world_boxes,
)


def test_wbf_fuses_agreeing_boxes_by_score_weighted_mean():
    a = (np.array([[10.0, 10, 20, 20]]), np.array([0.9]), np.array([0]))
    b = (np.array([[12.0, 10, 22, 20]]), np.array([0.3]), np.array([0]))
    boxes, scores, labels = weighted_box_fusion([a, b], iou_threshold=0.5)
    assert len(boxes) == 1 and labels.tolist() == [0]
    np.testing.assert_allclose(boxes[0], [10.5, 10, 20.5, 20])  # (0.9 * 10 + 0.3 * 12) / 1.2
    assert scores[0] == pytest.approx(0.6)


def test_wbf_keeps_classes_and_distant_boxes_apart_and_penalises_lone_boxes():
    a = (np.array([[0.0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.8, 0.8]), np.array([0, 0]))
    b = (np.array([[0.0, 0, 10, 10]]), np.array([0.8]), np.array([1]))  # same place, other class
    boxes, scores, labels = weighted_box_fusion([a, b])
    assert len(boxes) == 3
    np.testing.assert_allclose(sorted(scores), [0.4, 0.4, 0.4])  # each found by one of two predictions


def test_wbf_3d_and_empty():
    a = (np.array([[0.0, 0, 0, 4, 4, 4]]), np.array([0.5]), np.array([2]))
    boxes, scores, labels = weighted_box_fusion([a, a, a])
    np.testing.assert_allclose(boxes, a[0]) and np.testing.assert_allclose(scores, [0.5])
    empty = (np.zeros((0, 6)), np.zeros(0), np.zeros(0, np.int64))
    assert weighted_box_fusion([empty, empty])[0].shape == (0, 6)
    with pytest.raises(InvalidArgumentError):
        weighted_box_fusion([])


def test_mirror_passes():
    assert mirror_passes([0, 1], 2) == [(), (0,), (1,), (0, 1)]
    assert mirror_passes([0, 1, 2], 3) == [(), (0,), (1,), (2,)]
    assert mirror_passes([], 2) == [()]


def test_coco_results_format():
    rows = to_coco_results("case_7", np.array([[1.0, 2.0, 11.0, 7.0]]), np.array([0.75]), np.array([2]))
    assert rows == [{"image_id": "case_7", "category_id": 3, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.75}]
    assert categories_of(["a", "b"]) == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_3d_results_carry_world_boxes():
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [-10, 0, 5]
    box = np.array([[0.0, 0, 0, 1, 1, 1]])  # the first voxel: centre at index 0 = world (-10, 0, 5)
    np.testing.assert_allclose(world_boxes(box, affine), [[-11, -1, 3.5, -9, 1, 6.5]])
    flipped = affine.copy()
    flipped[0, 0] = -2.0  # an axis pointing the other way still gives min <= max
    assert (world_boxes(box, flipped)[:, 3:] >= world_boxes(box, flipped)[:, :3]).all()
    rows = to_coco_results("v", box * 4, np.array([0.5]), np.array([0]), affine=affine)
    assert rows[0]["bbox"] == [0, 0, 0, 4, 4, 4] and rows[0]["bbox_world"] == [-11, -1, 3.5, -3, 7, 15.5]


def test_detections_on_ignore_boxes_are_neither_hits_nor_false_positives():
    from deepmia.tasks.detect.evaluate import score

    ref = {"a": {"boxes": np.array([[0.0, 0, 10, 10]]), "labels": np.array([0]),
                 "ignore_boxes": np.array([[20.0, 20, 40, 40]]), "ignore_labels": np.array([0])}}
    pred = {"a": {"boxes": np.array([[0.0, 0, 10, 10], [22, 22, 30, 30], [22, 22, 30, 30]]),
                  "scores": np.array([0.5, 0.9, 0.8]), "labels": np.array([0, 0, 1])}}
    out = score(pred, ref, ["x", "y"], n_resamples=0)
    assert out["detections_on_ignore_boxes"] == 1  # the class-1 box on a class-0 ignore region still counts
    assert out["coco"]["per_class"]["x"]["ap50"] == pytest.approx(1.0)  # the 0.9 box no longer outranks the hit
