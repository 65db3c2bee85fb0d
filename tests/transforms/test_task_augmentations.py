"""Each task's augmentation draws its parameters from the ranges and with the probabilities its plan states."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from deepmia.tasks.classify.data import _augmentation, augment
from deepmia.tasks.classify.plan import Augmentation as ClassifyAugmentation
from deepmia.tasks.detect.data import Sample as DetectSample
from deepmia.tasks.detect.data import sample_augmentation
from deepmia.tasks.detect.plan import Augmentation as DetectAugmentation
from deepmia.tasks.segment.data import augment_batch, augmentation

N = 3000


def _fraction(flags) -> float:
    return float(np.mean(flags))


def _zoom(m: np.ndarray) -> float:
    """``s`` of a sampling matrix ``R / s``."""
    return abs(np.linalg.det(m)) ** (-1 / len(m))


def _close(value: float, expected: float, *, n: int = N) -> bool:
    """Within five binomial standard errors."""
    return abs(value - expected) <= 5 * math.sqrt(expected * (1 - expected) / n) + 1e-9


@pytest.mark.parametrize("preset, degrees, scale", [("default", 30, (0.7, 1.4)), ("light", 15, (0.85, 1.2))])
def test_segmentation_presets_keep_nnunet_probabilities_and_ranges(preset, degrees, scale):
    rng = np.random.default_rng(0)
    random = augmentation(preset, dims=2, mirror_axes=(0, 1))
    drawn = [random.sample(rng, (32, 32)).steps for _ in range(N)]
    affine, mirror, noise, intensity, contrast, gamma = (list(c) for c in zip(*drawn, strict=True))
    m = [np.asarray(t.matrix) for t in affine]
    zooms = np.array([_zoom(a) for a in m])
    zoomed = ~np.isclose(zooms, 1.0)
    angles = np.degrees([math.atan2(a[1, 0], a[0, 0]) for a in m])
    rotated = ~np.isclose(angles, 0.0)
    assert _close(_fraction(zoomed), 0.2) and _close(_fraction(rotated), 0.2)
    assert scale[0] <= zooms[zoomed].min() and zooms[zoomed].max() <= scale[1]
    assert np.abs(angles).max() <= degrees and np.abs(angles[rotated]).max() > 0.9 * degrees
    assert all(not any(t.translation) for t in affine)
    assert all(_close(_fraction([ax in t.axes for t in mirror]), 0.5) for ax in (0, 1))
    for steps, p, values, lo, hi in [
        (noise, 0.1, [t.std for t in noise], 0.0, 0.1),
        (intensity, 0.15, [t.scale for t in intensity], 0.75, 1.25),
        (contrast, 0.15, [t.factor for t in contrast], 0.75, 1.25),
        (gamma, 0.3, [t.gamma for t in gamma], 0.7, 1.5),
    ]:
        fired = np.array([not t.is_identity for t in steps])
        assert _close(_fraction(fired), p)
        v = np.asarray(values)[fired]
        assert lo <= v.min() and v.max() <= hi and abs(v.mean() - (lo + hi) / 2) < 0.05 * (hi - lo) + 0.01
    assert all(t.shift == 0 for t in intensity)


def test_segmentation_batches_keep_shapes_and_integral_labels():
    rng = np.random.default_rng(1)
    images = torch.randn(4, 1, 12, 14, 10)
    labels = torch.randint(0, 3, (4, 1, 12, 14, 10))
    for _ in range(10):
        x, y = augment_batch(images, labels, rng=rng, mirror_axes=(0, 1, 2))
        assert x.shape == images.shape and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1, 2}
    x, y = augment_batch(images, labels, rng=rng, preset="none")
    assert x is images and y is labels


def test_classification_draws_every_sample_from_the_plan_ranges():
    aug = ClassifyAugmentation(rotate_deg=10.0, scale=0.1, translate=0.08, intensity_scale=0.2, intensity_shift=0.2,
                               mirror_axes=[0])
    rng = np.random.default_rng(2)
    drawn = [_augmentation(aug).sample(rng, (28, 28)).steps for _ in range(N)]
    affine, mirror, intensity = (list(c) for c in zip(*drawn, strict=True))
    m = [np.asarray(t.matrix) for t in affine]
    zooms = np.array([_zoom(a) for a in m])
    angles = np.degrees([math.atan2(a[1, 0], a[0, 0]) for a in m])
    shifts = np.array([t.translation for t in affine])
    assert 0.9 <= zooms.min() and zooms.max() <= 1.1 and abs(zooms.mean() - 1.0) < 0.01
    assert np.abs(angles).max() <= 10 and np.abs(angles).max() > 9.5 and abs(angles.mean()) < 0.5
    assert np.abs(shifts).max() <= 0.16 and np.abs(shifts).max() > 0.15
    assert all(t.padding == "border" for t in affine)
    assert _close(_fraction([t.axes == (0,) for t in mirror]), 0.5)
    scales, offsets = np.array([t.scale for t in intensity]), np.array([t.shift for t in intensity])
    assert 0.8 <= scales.min() and scales.max() <= 1.2 and np.abs(offsets).max() <= 0.2
    assert abs(scales.mean() - 1) < 0.01 and abs(offsets.mean()) < 0.01


def test_classification_augment_replays_with_a_seeded_torch_generator():
    aug = ClassifyAugmentation(mirror_axes=[0, 1])
    x = torch.randn(8, 1, 16, 16)
    a = augment(x, aug, generator=torch.Generator().manual_seed(5))
    b = augment(x, aug, generator=torch.Generator().manual_seed(5))
    c = augment(x, aug, generator=np.random.default_rng(5))
    assert torch.equal(a, b) and a.shape == c.shape == x.shape and not torch.allclose(a, x)


def test_detection_draws_scale_crop_mirror_and_intensity_from_the_plan():
    a = DetectAugmentation(mirror_axes=[0, 1])
    plan = SimpleNamespace(augmentation=a, input_size=[64, 64], spatial_dims=2)
    sample = DetectSample("s", np.zeros((1, 400, 400), np.float32), np.array([[300, 300, 320, 320]], np.float32),
                          np.array([0]), (400, 400))
    rng = np.random.default_rng(3)
    drawn = [sample_augmentation(sample, plan, rng) for _ in range(N)]
    log_scale = np.log([d.scale for d in drawn])
    assert np.log(0.8) <= log_scale.min() and log_scale.max() <= np.log(1.2)
    assert abs(log_scale.mean() - (np.log(0.8) + np.log(1.2)) / 2) < 0.01  # log-uniform
    centred = [np.all(np.abs(np.array(d.origin) + 32 - 310 * d.scale) <= 0.25 * 64 + 1) for d in drawn]
    assert abs(_fraction(centred) - 0.5) < 0.05
    assert all(_close(_fraction([ax in d.mirror for d in drawn]), 0.5) for ax in (0, 1))
    scales, shifts = np.array([d.intensity_scale for d in drawn]), np.array([d.intensity_shift for d in drawn])
    assert 0.85 <= scales.min() and scales.max() <= 1.15 and np.abs(shifts).max() <= 0.15
