"""Invariants of the augmentation layer: replay, inverse, integral labels, identity at zero strength, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.transforms import (
    Affine,
    Blur,
    Compose,
    Contrast,
    Crop,
    Gamma,
    Intensity,
    Mirror,
    Noise,
    RandomAffine,
    RandomBlur,
    RandomCompose,
    RandomContrast,
    RandomCrop,
    RandomGamma,
    RandomIntensity,
    RandomMirror,
    RandomNoise,
    RandomResize,
    RandomRot90,
    Resize,
    Rot90,
    Sample,
    apply_batch,
    from_history,
)

RANDOM = {
    "mirror": lambda d: RandomMirror(range(d), p=0.5),
    "rot90": lambda d: RandomRot90((0, 1), p=1.0),
    "affine": lambda d: RandomAffine(degrees=30, scale=(0.7, 1.4), translate=0.1),
    "resize": lambda d: RandomResize((0.8, 1.25), log=True),
    "crop": lambda d: RandomCrop((8,) * d, object_fraction=0.5),
    "intensity": lambda d: RandomIntensity(scale=(0.8, 1.2), shift=(-0.2, 0.2)),
    "contrast": lambda d: RandomContrast((0.75, 1.25)),
    "gamma": lambda d: RandomGamma((0.7, 1.5)),
    "noise": lambda d: RandomNoise((0.05, 0.1)),
    "blur": lambda d: RandomBlur((0.5, 1.0)),
}


def _sample(dims: int, rng: np.random.Generator) -> Sample:
    shape = (12, 10) if dims == 2 else (12, 10, 9)
    image = rng.normal(size=(2, *shape)).astype(np.float32) + 3
    label = rng.integers(0, 3, size=(1, *shape)).astype(np.int64)
    boxes = np.array([[2, 1, 7, 6] if dims == 2 else [2, 1, 1, 7, 6, 5]], np.float32)
    return Sample(image, label, boxes, np.array([1]))


def _equal(a: Sample, b: Sample) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.box_labels, b.box_labels)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_replay_from_the_transform_and_from_its_json_history(name, dims):
    rng = np.random.default_rng(1)
    sample = _sample(dims, rng)
    out, t = RANDOM[name](dims)(sample, rng)
    _equal(out, t(sample))
    rebuilt = from_history(json.loads(json.dumps(t.history())))
    _equal(out, rebuilt(sample))
    assert rebuilt.history() == t.history()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_label_maps_stay_integral_and_keep_their_values(name, dims):
    rng = np.random.default_rng(2)
    sample = _sample(dims, rng)
    for _ in range(5):
        out, _t = RANDOM[name](dims)(sample, rng)
        assert out.label.dtype == np.int64
        assert set(np.unique(out.label)) <= {0, 1, 2}
        assert out.label.shape[1:] == out.image.shape[1:]


@pytest.mark.parametrize("t", [
    Mirror((0, 1)), Rot90(1), Rot90(3, (1, 2)), Intensity(1.3, -0.4), Contrast(0.8), Gamma(1.4), Noise(0.1, 7),
    Compose((Mirror((1,)), Rot90(2), Intensity(0.9, 0.1), Gamma(0.8))),
])
def test_inverse_restores_shape_affine_and_values(t):
    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    image = Image(rng.uniform(0, 1, size=(2, 6, 5, 4)).astype(np.float32), affine)
    out = t(image)
    back = t.inverse()(out)
    assert back.shape == image.shape and np.array_equal(back.affine, image.affine)
    np.testing.assert_allclose(back.array, image.array, atol=1e-5)
    label = Image(rng.integers(0, 4, size=(1, 6, 5, 4)).astype(np.int16), affine, kind="label")
    np.testing.assert_array_equal(t.inverse()(t(label)).array, label.array)


def test_affine_inverse_restores_a_smooth_image_inside_the_field_of_view():
    y, x = np.meshgrid(np.linspace(-1, 1, 48), np.linspace(-1, 1, 48), indexing="ij")
    image = np.exp(-(x**2 + 2 * y**2) * 2)[None].astype(np.float32)
    t = RandomAffine(degrees=20, scale=(0.9, 1.1), translate=0.05).sample(np.random.default_rng(4), (48, 48))
    assert not t.is_identity
    back = t.inverse()(t(image))
    assert back.shape == image.shape
    np.testing.assert_allclose(back[:, 12:36, 12:36], image[:, 12:36, 12:36], atol=0.03)


@pytest.mark.parametrize("t", [Crop((0, 0), (4, 4)), Resize(1.5), Blur((1.0, 1.0))])
def test_lossy_transforms_refuse_to_invert(t):
    assert not t.invertible
    with pytest.raises(InvalidArgumentError, match="cannot be inverted"):
        t.inverse()
    with pytest.raises(InvalidArgumentError):
        Compose((Mirror((0,)), t)).inverse()


@pytest.mark.parametrize("t", [
    Mirror(()), Rot90(0), Rot90(4), Affine.from_arrays(np.eye(2)), Resize(1.0), Intensity(), Contrast(1.0),
    Gamma(1.0), Noise(0.0, 3), Blur((0.0, 0.0)),
])
def test_identity_at_zero_strength(t):
    rng = np.random.default_rng(5)
    sample = _sample(2, rng)
    assert t.is_identity
    _equal(t(sample), sample)


@pytest.mark.parametrize("random", [
    RandomMirror((0, 1), p=0.0), RandomRot90(p=0.0), RandomAffine(), RandomAffine(degrees=30, p_rotate=0.0),
    RandomResize((1.0, 1.0)), RandomIntensity(), RandomContrast((1.0, 1.0)), RandomGamma((1.0, 1.0)),
    RandomNoise((0.0, 0.0)), RandomBlur((0.0, 0.0)),
])
def test_random_transforms_at_zero_strength_draw_the_identity(random):
    rng = np.random.default_rng(6)
    sample = _sample(2, rng)
    out, t = random(sample, rng)
    assert t.is_identity
    _equal(out, sample)


def test_numpy_and_torch_inputs_give_the_same_result():
    rng = np.random.default_rng(7)
    random = RandomCompose([RandomAffine(degrees=20, scale=(0.8, 1.2)), RandomMirror((0, 1, 2)),
                            RandomNoise((0.1, 0.1)), RandomGamma(), RandomContrast(), RandomIntensity(scale=(0.5, 2))])
    x = rng.normal(size=(1, 8, 9, 10)).astype(np.float32)
    t = random.sample(rng, x.shape[1:])
    out = t(torch.from_numpy(x.copy()))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), t(x), rtol=1e-5, atol=1e-5)


def test_apply_batch_matches_each_sample_on_its_own_and_leaves_the_input():
    rng = np.random.default_rng(8)
    random = RandomCompose([RandomAffine(degrees=30, scale=(0.7, 1.4), p_rotate=0.5, p_scale=0.5),
                            RandomMirror((0, 1)), RandomNoise(p=0.5), RandomIntensity(scale=(0.75, 1.25), p=0.5),
                            RandomContrast(p=0.5), RandomGamma(p=0.5)])
    images = torch.randn(6, 2, 10, 12)
    labels = torch.randint(0, 3, (6, 1, 10, 12))
    before = images.clone()
    drawn = [random.sample(rng, images.shape[2:]) for _ in range(6)]
    x, y = apply_batch(drawn, images, labels)
    assert torch.equal(images, before) and y.dtype == torch.int64
    for i, t in enumerate(drawn):
        one = t(Sample(images[i], labels[i]))
        torch.testing.assert_close(x[i], one.image, rtol=1e-5, atol=1e-5)
        assert torch.equal(y[i], one.label)


def test_apply_batch_refuses_shape_changes_and_a_wrong_count():
    with pytest.raises(InvalidArgumentError, match="keep the spatial shape"):
        apply_batch([Rot90(1)], torch.zeros(1, 1, 4, 5))
    with pytest.raises(InvalidArgumentError, match="2 transforms for a batch of 3"):
        apply_batch([Mirror(), Mirror()], torch.zeros(3, 1, 4, 4))


def test_bad_history_and_parameters_are_refused_with_the_fix():
    with pytest.raises(InvalidArgumentError, match="did you mean 'Mirror'"):
        from_history([{"name": "Miror", "axes": [0]}])
    with pytest.raises(InvalidArgumentError, match="no parameter"):
        from_history([{"name": "Mirror", "axis": [0]}])
    with pytest.raises(InvalidArgumentError, match="no 'name'"):
        from_history([{"axes": [0]}])
    with pytest.raises(InvalidArgumentError, match="probability"):
        RandomMirror((0,), p=1.5)
    with pytest.raises(InvalidArgumentError, match="not a range"):
        RandomGamma((1.5, 0.7))
