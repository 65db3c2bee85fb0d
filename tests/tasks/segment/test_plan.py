"""Planning from the fingerprint: patch, topology, spacing, normalisation, overrides, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepmia.data.dataset import Dataset
from deepmia.data.stats import fingerprint
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.tasks.segment.plan import SegmentPlan, apply_overrides, load_plan, make_plan

MACHINE = {"cores": 2, "memory_gib": 24, "gpu": None}


def _plan(ds, **kw):
    return make_plan(ds, fingerprint(ds), machine=MACHINE, **kw)


def test_plan_follows_the_data(spheres):
    plan = _plan(spheres, time_budget_s=600)
    assert plan.spatial_dims == 3 and plan.num_classes == 3 and plan.in_channels == 1
    assert plan.target_spacing == [1.5, 1.5, 2.0]
    assert plan.normalization[0].scheme == "zscore"
    strides = np.array(plan.network_params["strides"])
    pools = strides.prod(axis=0)
    assert all(p % k == 0 for p, k in zip(plan.patch_size, pools, strict=True))
    # The patch covers the median shape (20 x 22 x 18) rounded up to the pooling factors.
    assert all(p >= s for p, s in zip(plan.patch_size, (20, 22, 18), strict=True))
    assert len(plan.network_params["filters"]) == len(strides)
    assert plan.schedule.time_budget_s == 600 and plan.schedule.optimizer == "adamw"
    assert plan.inference.mirror_axes == [0, 1, 2]


def test_ct_channels_get_clipped_dataset_statistics(tmp_path, write_dataset):
    ds = write_dataset(tmp_path / "ct")
    data = json.loads((ds.root / "dataset.json").read_text())
    data["channels"][0]["modality"] = "CT"
    (ds.root / "dataset.json").write_text(json.dumps(data))
    plan = _plan(Dataset.load(ds.root))
    norm = plan.normalization[0]
    assert norm.scheme == "ct" and norm.clip[0] < norm.clip[1] and norm.std > 0


def test_anisotropic_spacing_keeps_the_coarse_axis_unpooled_at_first(tmp_path, write_dataset):
    ds = write_dataset(tmp_path / "aniso", affine=np.diag([0.8, 0.8, 5.0, 1.0]))
    plan = _plan(ds)
    assert plan.anisotropic_axis == 2
    assert plan.network_params["kernels"][0] == [3, 3, 1]
    assert plan.network_params["strides"][1][2] == 1


def test_overrides_and_round_trip(spheres, tmp_path):
    plan = apply_overrides(_plan(spheres), ["schedule.lr=0.001", "patch_size=[32,32,32]", "augmentation=light"])
    assert plan.schedule.lr == 0.001 and plan.patch_size == [32, 32, 32] and plan.augmentation == "light"
    assert load_plan(plan.save(tmp_path / "plan.json")) == plan
    with pytest.raises(InvalidArgumentError, match="schedule.lr|greater than 0"):
        apply_overrides(plan, ["schedule.lr=-1"])
    with pytest.raises(InvalidArgumentError, match="augmentaton|augmentation"):
        apply_overrides(plan, ["augmentaton=light"])
    with pytest.raises(InvalidArgumentError, match="key=value"):
        apply_overrides(plan, ["schedule.lr"])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidArgumentError, match="bad.json"):
        load_plan(tmp_path / "bad.json")


def test_empty_label_set_is_refused(spheres):
    data = json.loads((spheres.root / "dataset.json").read_text())
    data["labels"] = {"0": "background"}
    (spheres.root / "dataset.json").write_text(json.dumps(data))
    ds = Dataset.load(spheres.root)
    with pytest.raises(DatasetError, match="label set is empty"):
        make_plan(ds, {"spatial_dims": 3}, machine=MACHINE)


def test_plan_is_json_schema_valid(spheres):
    plan = _plan(spheres)
    again = SegmentPlan.model_validate_json(plan.model_dump_json())
    assert again == plan
