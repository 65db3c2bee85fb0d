"""Learned registration: the networks, sampling and moments helpers, a tiny training run that resumes, inference
geometry and outputs, divergence detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from deepmia.data.dataset import Case, Dataset
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.io import read_image, write_image
from deepmia.tasks.register.classical import RegistrationDivergedError
from deepmia.tasks.register.learned import (
    LearnedRegistration,
    centre_of_mass,
    folding_fraction,
    map_points,
    moments_map,
    pad_end,
    padded_shape,
    sample,
    voxel_grid,
)
from deepmia.tasks.register.plan import RegistrationPlan
from deepmia.tasks.register.predict import Predictor

torch = pytest.importorskip("torch")

TINY = {"channels": [4, 8, 8, 8], "final_channels": [4], "affine_channels": [4, 8], "integration_steps": 2}


def test_voxelmorph_returns_field_per_axis():
    from deepmia.nn import build_network

    net = build_network("voxelmorph", spatial_dims=3, channels=(4, 8, 8, 8), final_channels=(4,), integration_steps=2)
    x = torch.rand(1, 1, 16, 16, 16)
    warped, ddf = net(x, x)
    assert warped.shape == x.shape and ddf.shape == (1, 3, 16, 16, 16)


def test_affine_voxelmorph_starts_at_identity_and_composes_its_affine():
    from deepmia.nn import build_network

    net = build_network("affine_voxelmorph", spatial_dims=3, **TINY).eval()
    x = torch.rand(2, 1, 16, 32, 16)
    with torch.no_grad():
        warped, ddf = net(x, x)
        assert warped.shape == x.shape and ddf.shape == (2, 3, 16, 32, 16)
        assert float(ddf.abs().max()) < 1e-3
        net.affine_fc.bias[9:] = torch.tensor([0.5, -0.25, 0.0])  # a shift of 4 * (0.5, -0.25, 0) voxels
        matrix = net.affine(x, x)
        assert torch.allclose(matrix[:, :, 3], torch.tensor([2.0, -1.0, 0.0]).expand(2, 3), atol=1e-6)
        ddf = net.field(x, x)
    assert torch.allclose(ddf.mean((2, 3, 4)), torch.tensor([2.0, -1.0, 0.0]).expand(2, 3), atol=1e-2)


def test_sampling_helpers_shift_pad_and_fold():
    a = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(1, 1, 5, 6, 7)
    shift = np.eye(4)
    shift[:3, 3] = [1, 0, 2]
    out = sample(a, map_points(shift, voxel_grid((4, 6, 5))[None]))
    assert torch.allclose(out[0, 0], a[0, 0, 1:, :, 2:])
    assert sample(a, voxel_grid((5, 6, 7))[None] + 10.0).abs().max() == 0  # zero outside
    assert pad_end(a, padded_shape((5, 6, 7), 4)).shape == (1, 1, 8, 8, 8)
    flipped = voxel_grid((6, 6, 6))[None].clone()
    flipped[:, 0] = 5 - flipped[:, 0]
    assert folding_fraction(voxel_grid((6, 6, 6))[None]) == 0.0 and folding_fraction(flipped) == 1.0


def test_moments_map_matches_centres_of_mass_in_world():
    fixed = np.zeros((1, 10, 12, 8), np.float32)
    fixed[0, 2:5, 3:6, 2:4] = 1
    affine = np.diag([2.0, -1.0, 1.5, 1.0])
    affine[:3, 3] = [10, 20, -5]
    f = Image(fixed, affine)
    m = Image(np.roll(fixed, (3, 2, 1), axis=(1, 2, 3)), np.eye(4))
    cf, cm = centre_of_mass(f), centre_of_mass(m)
    matrix = moments_map(f.affine, cf, m.affine, cm)
    mapped = matrix @ np.append(f.world_to_voxel(cf), 1.0)
    assert np.allclose(mapped[:3], m.world_to_voxel(cm))


def _case(rng, shape=(20, 22, 18)) -> tuple[np.ndarray, np.ndarray]:
    x = np.indices(shape).astype(np.float32)
    c = np.array(shape)[:, None, None, None] / 2 + rng.uniform(-2, 2, (3, 1, 1, 1))
    r = rng.uniform(4, 7, (3, 1, 1, 1))
    label = (((x - c) / r) ** 2).sum(0) < 1
    upper = label & (x[2] > c[2, 0, 0, 0])
    lab = label.astype(np.uint8) + upper.astype(np.uint8)
    img = ndimage.gaussian_filter(lab.astype(np.float32) * 50 + rng.normal(0, 2, shape), 1.0)
    return img.astype(np.float32), lab


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    cases = []
    for i in range(20):
        img, lab = _case(rng)
        write_image(Image(img[None]), root / f"images/c{i}.nii.gz")
        write_image(Image(lab[None], kind="label"), root / f"labels/c{i}.nii.gz")
        cases.append(Case(id=f"c{i}", patient_id=f"p{i}", images=[f"images/c{i}.nii.gz"], label=f"labels/c{i}.nii.gz"))
    Dataset.create(
        root,
        name="blobs",
        task="segmentation",
        channels=[{"name": "image", "modality": "MR"}],
        labels={"0": "background", "1": "lower", "2": "upper"},
        cases=cases,
    ).save()
    return root


def test_plan_registration_plans_from_the_data(dataset):
    """The plan a training run would use, without training (what ``deepmia plan`` needs), and its refusals."""
    from deepmia.errors import DatasetError
    from deepmia.tasks.register.train import plan_registration

    ds = Dataset.load(dataset)
    plan = plan_registration(ds, time_budget_s=60, overrides={"batch_size": 2, "network_params": TINY})
    assert plan.grid_shape == [32, 32, 32] and plan.labels == [1, 2]  # 20 x 22 x 18 cases padded to 16s
    assert plan.time_budget_s == 60 and plan.batch_size == 2 and plan.network_params == TINY
    assert plan_registration(ds, overrides=["dice_weight=0"]).dice_weight == 0  # as `deepmia plan --set` gives them
    assert plan_registration(ds, shapes=[(20, 22, 18), (40, 8, 8)]).grid_shape == [48, 32, 32]
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        plan_registration(ds, overrides=["batch_size=0"])
    with pytest.raises(DatasetError, match="3D volumes"):
        plan_registration(ds, shapes=[(20, 22)])
    with pytest.raises(DatasetError, match=">= 20 cases"):
        plan_registration(ds.without_cases(["c0"]))


@pytest.mark.slow
def test_train_resume_then_register(dataset, tmp_path):
    from deepmia.tasks.register.train import plan_registration, train_registration

    model = tmp_path / "model"
    options = dict(time_budget_s=60, steps_per_epoch=2, batch_size=2, network_params=TINY)
    summary = train_registration(dataset, model, max_epochs=1, **options)  # precision measured
    assert summary["epochs"] == 1 and summary["steps"] == 2
    assert summary["precision"]["train"]["precision"] in ("bf16", "fp32")
    from deepmia.data.dataset import Dataset
    from deepmia.report.model_card import write_model_card

    write_model_card(model, task="register", dataset=Dataset.load(dataset))  # as `deepmia train register` does
    for name in ("plan.json", "split.json", "metrics.json", "README.md", "fold_0/model_best.pt"):
        assert (model / name).is_file()
    plan = json.loads((model / "plan.json").read_text())
    assert plan["task"] == "registration" and plan["network"] == "affine_voxelmorph"
    settings = {"max_epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "network_params": TINY}
    planned = plan_registration(Dataset.load(dataset), time_budget_s=60, overrides=settings).model_dump()
    assert {k: v for k, v in planned.items() if "precision" not in k} == {  # training measures only precisions
        k: v for k, v in plan.items() if "precision" not in k
    }
    assert all(n % 16 == 0 for n in plan["grid_shape"])
    split = json.loads((model / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"])
    assert 0.0 <= summary["best_val_dice"] <= 1.0 and 0.0 <= summary["best_val_folding"] <= 1.0

    resumed = train_registration(dataset, model, max_epochs=2, **options)
    assert resumed["epochs"] == 2 and resumed["steps"] == 4  # continued, not restarted
    assert resumed["precision"]["train"].get("resumed")

    ds = Dataset.load(dataset)
    fixed, moving = ds.read_image("c0"), ds.read_image("c1")
    out = Predictor(method="learned", model_dir=model).run(
        fixed, moving, tmp_path / "out", moving_label=ds.read_label("c1")
    )
    assert out["method"] == "learned" and out["stages"][-1]["stage"] == "network"
    assert read_image(tmp_path / "out" / "warped_label.nii.gz").same_geometry(fixed)
    assert (tmp_path / "out" / "transform.h5").is_file() and (tmp_path / "out" / "displacement.nii.gz").is_file()


def _untrained(tmp_path) -> LearnedRegistration:
    from deepmia.nn import build_network

    plan = RegistrationPlan(network_params=TINY, grid_shape=[32, 32, 32], labels=[1])
    return LearnedRegistration(plan, build_network(plan.network, spatial_dims=3, **TINY).eval())


def _blob(shape, centre, affine) -> Image:
    x = np.indices(shape).astype(np.float32)
    r2 = sum((x[k] - centre[k]) ** 2 for k in range(3))
    return Image(np.exp(-r2 / 18.0)[None].astype(np.float32), affine)


def test_inference_geometry_world_moments_on_oblique_grids(tmp_path):
    model = _untrained(tmp_path)  # a near-identity network: the result is the moments translation
    a = np.diag([1.5, -1.0, 2.0, 1.0])
    a[:3, 3] = [-20, 15, 3]
    fixed = _blob((20, 26, 14), (9, 12, 7), a)
    moving = _blob((22, 18, 16), (12, 8, 6), np.eye(4))
    result = model.register(fixed, moving)
    assert result.transform.grid.same_geometry(fixed)
    cf, cm = centre_of_mass(fixed), centre_of_mass(moving)
    assert np.allclose(result.transform.map_points(cf[None])[0], cm, atol=0.05)
    assert result.metric_after > result.metric_before


def test_divergence_and_bad_options_are_reported(tmp_path):
    model = _untrained(tmp_path)
    eye = np.eye(4)
    fixed, moving = _blob((16, 16, 16), (7, 8, 8), eye), _blob((16, 16, 16), (8, 7, 8), eye)
    with pytest.raises(InvalidArgumentError, match="no classical options"):
        model.register(fixed, moving, levels=2)
    model.network.field = lambda m, f: torch.full((1, 3, *f.shape[2:]), 40.0)  # everything sampled outside
    with pytest.raises(RegistrationDivergedError, match="diverged"):
        model.register(fixed, moving)
    model.network.field = lambda m, f: torch.full((1, 3, *f.shape[2:]), float("nan"))
    with pytest.raises(RegistrationDivergedError, match="not finite"):
        model.register(fixed, moving)
