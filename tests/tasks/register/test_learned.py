"""Learned registration: the registered network, a tiny training run on a synthetic dataset, inference outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from deepmia.data.dataset import Case, Dataset
from deepmia.image import Image
from deepmia.io import write_image
from deepmia.tasks.register.learned import pad_to_multiple, voxel_field_to_world
from deepmia.tasks.register.predict import Predictor

torch = pytest.importorskip("torch")


def test_network_returns_field_per_axis():
    from deepmia.nn import build_network

    net = build_network("voxelmorph", spatial_dims=3, channels=(4, 8, 8, 8), final_channels=(4,), integration_steps=2)
    x = torch.rand(1, 1, 16, 16, 16)
    warped, ddf = net(x, x)
    assert warped.shape == x.shape and ddf.shape == (1, 3, 16, 16, 16)


def test_voxel_field_to_world_uses_the_affine():
    grid = Image(np.zeros((1, 4, 5, 6), np.float32), np.diag([-2.0, 3.0, 1.0, 1.0]))
    ddf = np.zeros((3, 4, 5, 6), np.float32)
    ddf[0] = 1.0  # one voxel along axis 0 = -2 mm in R
    world = voxel_field_to_world(ddf, grid)
    assert np.allclose(world.array[0], -2.0) and np.allclose(world.array[1:], 0.0)
    assert pad_to_multiple(np.zeros((1, 17, 16, 3))).shape == (1, 32, 16, 16)


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
    for i in range(10):
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


def test_train_then_register(dataset, tmp_path):
    from deepmia.tasks.register.train import train_registration

    model = tmp_path / "model"
    summary = train_registration(
        dataset,
        model,
        time_budget_s=30,
        max_epochs=1,
        steps_per_epoch=1,
        network_params={"channels": [4, 8, 8, 8], "final_channels": [4], "integration_steps": 2},
    )
    assert summary["epochs"] == 1
    for name in ("plan.json", "split.json", "metrics.json", "README.md", "fold_0/model_best.pt"):
        assert (model / name).is_file()
    plan = json.loads((model / "plan.json").read_text())
    assert plan["task"] == "registration" and all(n % 16 == 0 for n in plan["grid_shape"])
    split = json.loads((model / "split.json").read_text())
    assert not set(split["test"]) & set(split["train"])

    ds = Dataset.load(dataset)
    fixed, moving = ds.read_image("c0"), ds.read_image("c1")
    out = Predictor(method="learned", model_dir=model).run(
        fixed,
        moving,
        tmp_path / "out",
        moving_label=ds.read_label("c1"),
    )
    assert out["method"] == "learned" and out["stages"][-1]["stage"] == "network"
    from deepmia.io import read_image

    assert read_image(tmp_path / "out" / "warped_label.nii.gz").same_geometry(fixed)
    assert (tmp_path / "out" / "transform.h5").is_file()
