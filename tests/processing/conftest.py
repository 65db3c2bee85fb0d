"""Synthetic phantoms with known geometry for processing tests."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.image import Image


def rotated_affine(spacing=(0.8, 1.1, 2.5), angle=0.3, origin=(-20.0, 15.0, 7.0)) -> np.ndarray:
    """An oblique affine with anisotropic spacing (rotation about the z axis)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot * np.asarray(spacing)[None, :]
    a[:3, 3] = origin
    return a


@pytest.fixture
def noisy_volume() -> Image:
    """A 40x36x24 float32 sphere phantom plus Gaussian noise on an anisotropic oblique grid."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(24), indexing="ij")
    sphere = ((x - 20) * 0.8) ** 2 + ((y - 18) * 1.1) ** 2 + ((z - 12) * 2.5) ** 2 < 12**2
    arr = 100.0 * sphere + 20.0 + rng.normal(0, 10, sphere.shape)
    return Image(arr[None].astype(np.float32), rotated_affine(), meta={"modality": "MR"})


@pytest.fixture
def label_volume(noisy_volume: Image) -> Image:
    """Two labels on the noisy volume's grid: a sphere (1) and a box (2)."""
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(24), indexing="ij")
    lab = np.zeros((40, 36, 24), np.uint8)
    lab[((x - 14) * 0.8) ** 2 + ((y - 18) * 1.1) ** 2 + ((z - 12) * 2.5) ** 2 < 8**2] = 1
    lab[28:36, 10:20, 8:16] = 2
    return Image(lab[None], noisy_volume.affine, kind="label")


@pytest.fixture
def image_2d() -> Image:
    """A 64x48 two-channel 2D image with 0.5 x 0.7 mm pixels."""
    rng = np.random.default_rng(1)
    x, y = np.meshgrid(np.arange(64), np.arange(48), indexing="ij")
    disc = ((x - 32) * 0.5) ** 2 + ((y - 24) * 0.7) ** 2 < 8**2
    chans = np.stack([50.0 * disc + rng.normal(0, 5, disc.shape), 30.0 * ~disc + rng.normal(0, 3, disc.shape)])
    return Image(chans.astype(np.float32), np.diag([0.5, 0.7, 1.0, 1.0]))


@pytest.fixture
def touching_labels() -> Image:
    """Two labels that share a face (1: x 8..19, 2: x 20..31) and a third inside 2's box, on 1 x 1 x 2 mm voxels.

    Where labels touch, grey-level morphology of the label map and per-label morphology differ, so tests on this
    fixture fail if per-label operations are replaced by grey-level min/max.
    """
    lab = np.zeros((40, 30, 16), np.uint8)
    lab[8:20, 5:25, 3:13] = 1
    lab[20:32, 5:25, 3:13] = 2
    lab[24:28, 12:18, 6:10] = 3
    return Image(lab[None], np.diag([1.0, 1.0, 2.0, 1.0]), kind="label")
