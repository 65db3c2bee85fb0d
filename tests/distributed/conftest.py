"""Fixtures of the batch-inference tests: PneumoniaMNIST test images as PNG files, and the sequential reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from deepmia.tasks import resolve_model

N_CASES = 20


def write_pngs(npz: Path, dst: Path, n: int, start: int = 0) -> Path:
    """The first ``n`` PneumoniaMNIST test images (from ``start``) as ``test_XXXX.png`` in ``dst``."""
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    images = np.load(npz)["test_images"]
    for i in range(start, start + n):
        Image.fromarray(images[i]).save(dst / f"test_{i:04d}.png")
    return dst


@pytest.fixture(scope="session")
def pngs(shared_data, tmp_path_factory) -> Path:
    """A folder of 20 real chest X-ray PNG images (28x28)."""
    return write_pngs(shared_data / "medmnist" / "pneumoniamnist.npz", tmp_path_factory.mktemp("pngs"), N_CASES)


@pytest.fixture(scope="session")
def classifier() -> Path:
    """The shipped PneumoniaMNIST classifier."""
    return resolve_model("pneumoniamnist")


@pytest.fixture(scope="session")
def sequential(pngs, classifier, tmp_path_factory) -> Path:
    """What the plain loop of ``deepmia predict`` writes for :func:`pngs`."""
    from deepmia.engine.batch import run_batch
    from deepmia.tasks import load_predictor

    out = tmp_path_factory.mktemp("sequential")
    run_batch(load_predictor(classifier), pngs, out)
    return out


def _copy_subset(src: Path, dst: Path, names: list[str]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(src / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def copy_subset():
    """``copy_subset(src, dst, names)``: copy the files ``names`` of ``src`` into ``dst`` (created)."""
    return _copy_subset


@pytest.fixture(scope="session")
def png_writer(shared_data):
    """``png_writer(dst, n)``: the first ``n`` PneumoniaMNIST test images as PNG files in ``dst``."""
    return lambda dst, n: write_pngs(shared_data / "medmnist" / "pneumoniamnist.npz", dst, n)
