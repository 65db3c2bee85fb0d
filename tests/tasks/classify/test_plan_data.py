"""Planning rules, network inputs, augmentation and the clinical-table encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks.classify.data import augment, check_image, encode_table, fit_table, to_network_input
from deepmia.tasks.classify.plan import apply_overrides, make_plan


def _fingerprint(dims: int, shape: int, counts: dict[str, int], modality: str = "DX") -> dict:
    axis = {"min": shape, "median": shape, "max": shape}
    return {
        "name": "toy", "task": "classification", "num_cases": sum(counts.values()), "spatial_dims": dims,
        "shape": [axis] * dims, "spacing": [{"min": 1, "median": 1, "max": 1}] * dims,
        "channels": [{"name": "image", "modality": modality, "intensity": {
            "mean": 100.0, "std": 20.0, "percentile_00_5": 10.0, "percentile_99_5": 200.0}}],
        "labels": counts,
    }


def test_plan_small_2d_imbalanced() -> None:
    plan = make_plan(_fingerprint(2, 28, {"normal": 100, "pneumonia": 300}), time_budget_s=60)
    assert plan.input_size == [28, 28]
    assert plan.network_params["small_input"] is True
    assert plan.augmentation.mirror_axes == [0]
    w = plan.class_weights
    assert w is not None and w[0] > w[1]  # the rarer class weighs more
    assert plan.normalization.clip is None  # not CT


def test_plan_large_3d_ct_balanced() -> None:
    plan = make_plan(_fingerprint(3, 128, {"a": 50, "b": 60}, modality="CT"))
    assert plan.input_size == [64, 64, 64]  # capped on a CPU
    assert plan.network_params["small_input"] is False
    assert plan.augmentation.mirror_axes == [0, 1, 2]
    assert plan.class_weights is None
    assert plan.normalization.clip == [(10.0, 200.0)]


def test_plan_refuses_other_tasks_and_bad_overrides() -> None:
    fp = _fingerprint(2, 28, {"a": 1, "b": 1})
    with pytest.raises(DatasetError, match="segmentation"):
        make_plan({**fp, "task": "segmentation"})
    plan = make_plan(fp)
    assert apply_overrides(plan, ["schedule.lr=0.01"]).schedule.lr == 0.01
    with pytest.raises(InvalidArgumentError, match="did you mean"):
        apply_overrides(plan, ["schedule.lrr=0.01"])
    with pytest.raises(InvalidArgumentError):
        apply_overrides(plan, ["schedule.lr=-1"])


def test_network_input_resizes_standardizes_and_refuses_wrong_images() -> None:
    plan = make_plan(_fingerprint(2, 28, {"a": 1, "b": 1}))
    img = Image(np.full((1, 56, 56), 120.0, dtype=np.float32))
    x = to_network_input(img, plan)
    assert x.shape == (1, 28, 28) and np.allclose(x, 1.0)  # (120 - 100) / 20
    with pytest.raises(InvalidArgumentError, match="channel"):
        check_image(Image(np.zeros((3, 28, 28), np.float32)), plan, path="rgb.png")
    with pytest.raises(InvalidArgumentError, match="3D"):
        check_image(Image(np.zeros((1, 8, 8, 8), np.float32)), plan, path="vol.nii.gz")


def test_augment_keeps_shape_and_replays_with_the_seed() -> None:
    plan = make_plan(_fingerprint(3, 16, {"a": 1, "b": 1}))
    x = torch.randn(4, 1, 16, 16, 16)
    a = augment(x.clone(), plan.augmentation, generator=torch.Generator().manual_seed(3))
    b = augment(x.clone(), plan.augmentation, generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)


def test_table_encoding_numeric_categorical_missing() -> None:
    rows = {"c1": {"age": "50", "sex": "F"}, "c2": {"age": "70", "sex": "M"}, "c3": {"age": "", "sex": "NA"},
            "c4": {"age": "60", "sex": "X"}}
    spec = fit_table(rows, ["c1", "c2", "c3"])
    assert spec.numeric == {"age": (60.0, 10.0)} and spec.categorical == {"sex": ["F", "M"]}
    enc = encode_table(rows, ["c1", "c3", "c4"], spec)
    assert enc.shape == (3, spec.width) == (3, 5)
    assert enc[0].tolist() == [-1.0, 0.0, 1.0, 0.0, 0.0]
    assert enc[1].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]  # missing age flagged, missing sex in the extra slot
    assert enc[2, 4] == 1.0  # unseen category "X" shares the extra slot
    with pytest.raises(DatasetError, match="unknown clinical column"):
        fit_table(rows, ["c1"], columns=["age", "weight"])
    with pytest.raises(DatasetError, match="no row"):
        encode_table(rows, ["c1", "c9"], spec)
