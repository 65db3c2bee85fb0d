"""Detection plan: anchors from the box statistics (k-means), scale and pyramid rules, validation, overrides."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepmia.data.importers import import_dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.tasks.detect.plan import DetectPlan, apply_overrides, kmeans_shapes, load_plan, make_plan
from deepmia.tasks.detect.train import plan_dataset


def _fingerprint(sizes, shape=(256, 256), dims=2) -> dict:
    return {"name": "t", "class_names": ["a"], "channels": ["grey"], "spatial_dims": dims,
            "shapes": [list(shape)] * 10, "box_sizes": sizes, "box_counts": {"a": len(sizes)},
            "mean": [0.0], "std": [1.0]}


def test_kmeans_recovers_distinct_shapes():
    rng = np.random.default_rng(0)
    truth = np.array([[8, 24], [16, 16], [30, 10]], float)
    shapes = np.concatenate([t * rng.uniform(0.9, 1.1, (50, 2)) for t in truth])
    centres = kmeans_shapes(shapes, 3)
    for t in truth:  # every true shape has a centre within 15% per side
        assert np.min(np.abs(centres / t - 1).max(axis=1)) < 0.15
    assert np.all(np.diff(np.prod(centres, axis=1)) >= 0)  # sorted by size
    assert len(kmeans_shapes(np.array([[5.0, 5.0]] * 4), 3)) == 1  # fewer distinct shapes than k


def test_anchors_follow_box_aspect_and_levels_cover_the_sizes():
    rng = np.random.default_rng(1)
    tall = np.stack([rng.uniform(8, 10, 200), rng.uniform(30, 34, 200)], axis=1)
    plan = make_plan(_fingerprint((tall).tolist()))
    ratios = [h / w for w, h in plan.anchors.base_shapes]
    assert min(ratios) > 2.5  # elongated boxes give elongated anchors
    assert plan.anchors.feature_map_scales == [1, 2]  # one octave of sizes: the minimum of two levels
    small_and_large = [[12, 12]] * 50 + [[100, 100]] * 50
    plan = make_plan(_fingerprint(small_and_large))
    levels = len(plan.anchors.feature_map_scales)
    largest = max(max(s) for s in plan.anchors.base_shapes) * plan.anchors.feature_map_scales[-1]
    assert levels == 4 and largest >= 100 * plan.scale * 0.9
    assert len(plan.network_params["returned_layers"]) == levels - 1


def test_scale_keeps_small_objects_visible():
    big_image = make_plan(_fingerprint([[80, 80]] * 20, shape=(1536, 1536)))
    assert big_image.scale == pytest.approx(384 / 1536)  # fits the input size: objects keep 20 px
    tiny_objects = make_plan(_fingerprint([[20, 20]] * 20, shape=(1536, 1536)))
    assert tiny_objects.scale == pytest.approx(16 / 20)  # raised so the smallest objects keep 16 px
    assert all(s % tiny_objects.stride == 0 for s in tiny_objects.input_size)


def test_nms_is_tighter_in_3d():
    flat = make_plan(_fingerprint([[20, 20]] * 20))
    volume = make_plan(_fingerprint([[6, 6, 6]] * 20, shape=(64, 64, 64), dims=3))
    assert flat.inference.nms_threshold == 0.5 and volume.inference.nms_threshold == 0.22


def test_no_boxes_is_refused():
    with pytest.raises(DatasetError, match="no boxes"):
        make_plan(_fingerprint([]))


def test_plan_roundtrip_overrides_and_validation(tmp_path):
    plan = make_plan(_fingerprint([[10, 20]] * 30))
    path = tmp_path / "plan.json"
    path.write_text(plan.model_dump_json())
    assert load_plan(path) == plan
    assert apply_overrides(plan, ["inference.nms_threshold=0.4"]).inference.nms_threshold == 0.4
    with pytest.raises(InvalidArgumentError, match="input_size"):
        apply_overrides(plan, ["input_size=[64]"])
    with pytest.raises(InvalidArgumentError, match="mirror_axes"):
        apply_overrides(plan, ["augmentation.mirror_axes=[2]"])
    data = json.loads(path.read_text())
    data["anchors"]["base_shapes"] = [[0, 4]]
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidArgumentError, match="anchor"):
        load_plan(path)
    assert isinstance(plan, DetectPlan)


def test_bccd_plan_from_the_official_training_list(shared_data, tmp_path):
    ds = import_dataset("voc", shared_data / "bccd" / "BCCD", tmp_path / "bccd", link=True).dataset
    plan = plan_dataset(ds)
    assert plan.class_names == ["Platelets", "RBC", "WBC"] and plan.in_channels == 3
    fp = plan.fingerprint
    assert fp["num_images"] == len(ds.splits.folds[0].train)  # planned from the training list only
    smallest = min(min(s) for s in plan.anchors.base_shapes)
    largest = max(max(s) for s in plan.anchors.base_shapes) * plan.anchors.feature_map_scales[-1]
    platelet, wbc = 40 * plan.scale, 200 * plan.scale  # median platelet and WBC sides (image pixels)
    assert smallest <= platelet and largest >= wbc * 0.8


def test_plan_command_plans_a_detection_dataset(shapes_dataset, tmp_path):
    from deepmia.cli.main import main

    assert main(["plan", str(shapes_dataset.root), "--out", str(tmp_path / "plan.json")]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["task"] == "detection" and plan["class_names"] == ["bar", "square"] and plan["anchors"]["base_shapes"]
