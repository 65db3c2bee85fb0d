"""A small synthetic segmentation dataset written as real NIfTI files: two nested structures per case."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepmia.data.dataset import Dataset

TINY = [
    "patch_size=[16,16,16]",
    "batch_size=2",
    'network_params={"filters":[4,8,16],"strides":[[1,1,1],[2,2,2],[2,2,2]],"kernels":[[3,3,3],[3,3,3],[3,3,3]],'
    '"deep_supervision":true,"deep_supervision_heads":1}',
    "schedule.steps_per_epoch=3",
    "schedule.epochs=2",
    "schedule.precision=fp32",
    "schedule.optimizer=adamw",
    "schedule.lr=0.01",
    "inference.batch_size=2",
    "folds=2",
]

TINY_2D = [
    "patch_size=[32,32]",
    "batch_size=2",
    'network_params={"filters":[4,8,16],"strides":[[1,1],[2,2],[2,2]],"kernels":[[3,3],[3,3],[3,3]],'
    '"deep_supervision":true,"deep_supervision_heads":1}',
    "schedule.steps_per_epoch=3",
    "schedule.epochs=2",
    "schedule.precision=fp32",
    "inference.batch_size=2",
]


def make_case(rng: np.random.Generator, shape=(20, 22, 18)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape).astype(float)
    centre = np.array(shape)[:, None, None, None] / 2 + rng.uniform(-2, 2, size=(3, 1, 1, 1))
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    label[r < 7] = 2
    label[r < 4] = 1
    image = (label * 100.0 + rng.normal(0, 10, shape)).astype(np.float32)
    return image, label


def _write_dataset(root: Path, n: int = 6, *, affine=None, mutate=None) -> Dataset:
    rng = np.random.default_rng(0)
    affine = np.diag([1.5, 1.5, 2.0, 1.0]) if affine is None else affine
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cases = []
    for i in range(n):
        image, label = make_case(rng)
        if mutate is not None:
            image, label = mutate(i, image, label)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labels" / f"case{i}.nii.gz")
        cases.append(
            {
                "id": f"case{i}",
                "patient_id": f"p{i}",
                "images": [f"images/case{i}.nii.gz"],
                "label": f"labels/case{i}.nii.gz",
            }
        )
    ds = Dataset.create(
        root,
        name="spheres",
        task="segmentation",
        channels=[{"name": "image", "modality": "MR"}],
        labels={"0": "background", "1": "core", "2": "shell"},
        cases=cases,
    )
    ds.save()
    return Dataset.load(root)


@pytest.fixture()
def write_dataset():
    """``write_dataset(root, n=6, *, affine=None, mutate=None)`` -> a saved :class:`Dataset`."""
    return _write_dataset


@pytest.fixture()
def spheres(tmp_path) -> Dataset:
    return _write_dataset(tmp_path / "spheres")


@pytest.fixture()
def tiny() -> list[str]:
    """Plan overrides for a network and schedule small enough for a test."""
    return list(TINY)


@pytest.fixture()
def tiny_2d() -> list[str]:
    """Plan overrides for a 2D network and schedule small enough for a test."""
    return list(TINY_2D)
