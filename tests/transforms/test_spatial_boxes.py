"""Spatial transforms: boxes follow the pixels through mirroring, turns, affine warps, resizing and crops."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.transforms import (
    Affine,
    Compose,
    Crop,
    Mirror,
    RandomAffine,
    RandomCrop,
    RandomMirror,
    RandomResize,
    RandomRot90,
    Resize,
    Rot90,
    Sample,
    rotation_matrix,
)


def _bright_box(image: np.ndarray) -> np.ndarray:
    """Corner box of the pixels above half the maximum (axis 0 first)."""
    idx = np.argwhere(image[0] > 0.5 * image.max())
    return np.concatenate([idx.min(axis=0), idx.max(axis=0) + 1]).astype(float)


def _rectangle(shape, box) -> Sample:
    d = len(shape)
    image = np.zeros((1, *shape), np.float32)
    image[(0, *(slice(int(box[i]), int(box[i + d])) for i in range(d)))] = 1.0
    return Sample(image, (image > 0).astype(np.int64), np.array([box], np.float32), np.array([2]))


@pytest.mark.parametrize("t", [
    Mirror((0,)), Mirror((1,)), Mirror((0, 1)), Rot90(1), Rot90(2), Rot90(3),
    Affine.from_arrays(rotation_matrix([np.pi / 2]) / 1.25), Affine.from_arrays(np.eye(2) / 0.8, [0.2, -0.1]),
    Resize(1.5), Resize(0.75), Crop((4, -3), (20, 24)),
    Compose((Resize(1.2), Crop((2, 2), (30, 30)), Rot90(1), Mirror((1,)))),
])
def test_boxes_follow_the_pixels_2d(t):
    sample = _rectangle((40, 32), [10, 6, 22, 20])
    out = t(sample)
    assert out.box_labels.tolist() == [2]
    assert out.image.shape[1:] == t.output_shape((40, 32))
    np.testing.assert_allclose(out.boxes[0], _bright_box(out.image), atol=1.0)
    np.testing.assert_allclose(out.boxes[0], _bright_box(out.label.astype(np.float32)), atol=1.0)


@pytest.mark.parametrize("t", [Mirror((2,)), Rot90(1, (0, 2)), Rot90(3, (1, 2)), Resize(1.4)])
def test_boxes_follow_the_pixels_3d(t):
    sample = _rectangle((20, 16, 12), [3, 4, 2, 11, 9, 8])
    out = t(sample)
    np.testing.assert_allclose(out.boxes[0], _bright_box(out.image), atol=1.0)


def test_rotated_box_encloses_the_rotated_object():
    sample = _rectangle((48, 40), [14, 12, 30, 26])
    for seed in range(5):
        t = RandomAffine(degrees=30, scale=(0.8, 1.2), translate=0.05).sample(np.random.default_rng(seed), (48, 40))
        out = t(sample)
        np.testing.assert_allclose(out.boxes[0], _bright_box(out.image), atol=1.5)


def test_random_spatial_draws_keep_boxes_on_their_objects():
    rng = np.random.default_rng(0)
    sample = _rectangle((64, 64), [10, 30, 22, 50])
    for random in [RandomMirror((0, 1)), RandomRot90(), RandomResize((0.8, 1.2), log=True)]:
        for _ in range(5):
            out, _t = random(sample, rng)
            np.testing.assert_allclose(out.boxes[0], _bright_box(out.image), atol=1.0)


def test_object_centred_crops_hold_the_object_and_drop_hidden_boxes():
    rng = np.random.default_rng(1)
    sample = _rectangle((100, 100), [70, 70, 80, 80])
    random = RandomCrop((32, 32), object_fraction=1.0, jitter=0.25, min_visible=0.5)
    for _ in range(20):
        out, t = random(sample, rng)
        assert out.image.shape == (1, 32, 32)
        centre = np.array(t.origin) + 16
        assert (np.abs(centre - 75) <= 0.25 * 32 + 0.5).all()  # on the object, moved at most the jitter
    hidden = Crop((0, 0), (72, 100), min_visible=0.5)(sample)  # 2 of 10 rows visible
    assert len(hidden.boxes) == 0 and len(hidden.box_labels) == 0
