"""Synthetic detection datasets: bright squares and bars of known boxes on noise, with negative images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.data.dataset import Dataset


def draw_objects(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, list[dict]]:
    """A ``(rows, cols)`` uint8 image with ``n`` objects; boxes ``[x0, y0, x1, y1]`` (x = column)."""
    img = rng.normal(60, 12, (size, size))
    boxes = []
    for _ in range(n):
        label = "square" if rng.random() < 0.5 else "bar"
        w, h = (int(rng.integers(10, 15)),) * 2 if label == "square" else (6, int(rng.integers(18, 24)))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        img[y0:y0 + h, x0:x0 + w] = rng.normal(200, 10, (h, w))
        boxes.append({"label": label, "box": [x0, y0, x0 + w, y0 + h]})
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def make_dataset(root: Path, *, n_train: int = 24, n_val: int = 6, n_test: int = 4, size: int = 64,
                 negatives: int = 2, seed: int = 0) -> Dataset:
    """A 2D detection dataset folder; the last ``negatives`` training images have no objects."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    cases, ids = [], []
    total = n_train + n_val + n_test
    for i in range(total):
        cid = f"img{i:03d}"
        n = 0 if n_train - negatives <= i < n_train else int(rng.integers(1, 4))
        img, boxes = draw_objects(rng, size, n)
        PILImage.fromarray(img).save(root / "images" / f"{cid}.png")
        cases.append({"id": cid, "patient_id": cid, "images": [f"images/{cid}.png"], "boxes": boxes,
                      "shape": [size, size]})
        ids.append(cid)
    ds = Dataset.create(root, name="shapes", task="detection", channels=[{"name": "grey"}], labels=["bar", "square"],
                        cases=cases, splits={"folds": [{"train": ids[:n_train], "val": ids[n_train:n_train + n_val]}],
                                             "test": ids[n_train + n_val:]})
    ds.save()
    return ds


@pytest.fixture(scope="session")
def detect_app():
    """A Typer app with the detection commands (``train detect``, ``evaluate detect``)."""
    import typer

    from deepmia.cli import detect as cli

    root, train_app, evaluate_app = typer.Typer(), typer.Typer(), typer.Typer()
    root.add_typer(train_app, name="train")
    root.add_typer(evaluate_app, name="evaluate")
    cli.add_commands(app=root, train=train_app, evaluate=evaluate_app)
    return root


@pytest.fixture
def shapes_dataset(tmp_path: Path) -> Dataset:
    """A small synthetic 2D detection dataset."""
    return make_dataset(tmp_path / "shapes")


def make_volume_dataset(root: Path, *, n_train: int = 12, n_val: int = 4, size: int = 32, radius: tuple = (4, 6),
                        seed: int = 0) -> Dataset:
    """A 3D detection dataset of NIfTI volumes, each with one or two bright balls ("nodule")."""
    from deepmia.image import Image
    from deepmia.io import write_image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    grid = np.indices((size,) * 3).astype(np.float32)
    cases, ids = [], []
    for i in range(n_train + n_val):
        cid = f"vol{i:03d}"
        vol = rng.normal(0, 0.3, (size,) * 3).astype(np.float32)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            r = float(rng.uniform(radius[0], radius[1]))
            c = rng.uniform(r + 1, size - r - 1, 3)
            vol[((grid - c[:, None, None, None]) ** 2).sum(axis=0) <= r * r] += 2.0
            boxes.append({"label": "nodule", "box": [*(c - r).tolist(), *(c + r).tolist()]})
        write_image(Image(vol[None], np.eye(4)), root / "images" / f"{cid}.nii.gz")
        cases.append({"id": cid, "patient_id": cid, "images": [f"images/{cid}.nii.gz"], "boxes": boxes,
                      "shape": [size] * 3})
        ids.append(cid)
    ds = Dataset.create(root, name="balls", task="detection", channels=[{"name": "CT", "modality": "CT"}],
                        labels=["nodule"], cases=cases,
                        splits={"folds": [{"train": ids[:n_train], "val": ids[n_train:]}], "test": []})
    ds.save()
    return ds
