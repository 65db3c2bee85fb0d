"""Sliding-window inference: exact blending, mirroring, padding, and slab streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmia.engine.inference import gaussian_importance, sliding_window, window_starts
from deepmia.errors import InvalidArgumentError


@pytest.fixture()
def pointwise():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 3, 1)
    return lambda x: torch.softmax(net(x), 1)


def _full(fn, image):
    with torch.no_grad():
        return fn(torch.from_numpy(image)[None])[0].numpy()


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_window_starts_cover_the_axis(overlap):
    for size in (5, 16, 17, 40, 101):
        starts = window_starts(size, 16, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + 16] = True
        assert covered.all() and starts[0] == 0 and max(starts) == max(0, size - 16)


def test_pointwise_network_gives_the_whole_image_result(pointwise):
    # A 1x1x1 network's output does not depend on the window, so blending must reproduce it exactly.
    img = np.random.default_rng(0).random((2, 37, 50, 29), dtype=np.float32)
    full = _full(pointwise, img)
    probs = sliding_window(pointwise, img, window=(16, 16, 16), num_classes=3, out="probabilities")
    assert probs.dtype == np.float16 and probs.shape == full.shape
    np.testing.assert_allclose(probs.astype(np.float32), full, atol=1e-3)
    labels = sliding_window(pointwise, img, window=(16, 16, 16), num_classes=3, overlap=0.25, mirror_axes=(0, 1, 2))
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, full.argmax(0))


def test_mirroring_averages_flipped_predictions():
    # A network that is not flip-equivariant: the mirrored average must equal the mean of the flipped outputs.
    torch.manual_seed(1)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    fn = lambda x: torch.softmax(net(x), 1)  # noqa: E731
    img = np.random.default_rng(1).random((1, 16, 16, 16), dtype=np.float32)
    got = sliding_window(fn, img, window=(16, 16, 16), num_classes=2, mirror_axes=(0,), out="probabilities")
    t = torch.from_numpy(img)[None]
    with torch.no_grad():
        expect = (fn(t) + torch.flip(fn(torch.flip(t, [2])), [2]))[0].numpy() / 2
    np.testing.assert_allclose(got.astype(np.float32), expect, atol=1e-3)


def test_small_image_is_padded_and_cropped_back(pointwise):
    img = np.random.default_rng(2).random((2, 7, 9, 5), dtype=np.float32)
    labels = sliding_window(pointwise, img, window=(16, 16, 16), num_classes=3)
    assert labels.shape == (7, 9, 5)
    np.testing.assert_array_equal(labels, _full(pointwise, img).argmax(0))


def test_2d_images():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1)
    fn = lambda x: torch.softmax(net(x), 1)  # noqa: E731
    img = np.random.default_rng(3).random((1, 70, 45), dtype=np.float32)
    labels = sliding_window(fn, img, window=(32, 32), num_classes=2)
    with torch.no_grad():
        np.testing.assert_array_equal(labels, fn(torch.from_numpy(img)[None])[0].numpy().argmax(0))


def test_deep_volume_is_streamed_in_slabs():
    # The predict function sees windows in non-decreasing order of their last-axis start: the buffer slides.
    seen = []

    def fn(x):
        seen.append(x.shape[0])
        return torch.softmax(torch.cat([x, -x], 1), 1)

    img = np.random.default_rng(4).random((1, 20, 20, 200), dtype=np.float32)
    labels = sliding_window(fn, img, window=(20, 20, 16), num_classes=2, batch_size=1)
    np.testing.assert_array_equal(labels, (img[0] < -img[0]).astype(np.uint8))
    assert sum(seen) == len(window_starts(200, 16, 0.5))


def test_gaussian_map_peaks_in_the_centre():
    w = gaussian_importance((9, 9))
    assert w[4, 4] == 1.0 and w.min() > 0 and w[0, 0] < w[2, 2] < w[4, 4]


def test_bad_arguments(pointwise):
    img = np.zeros((2, 8, 8, 8), np.float32)
    with pytest.raises(InvalidArgumentError, match="overlap"):
        sliding_window(pointwise, img, window=(8, 8, 8), num_classes=3, overlap=1.0)
    with pytest.raises(InvalidArgumentError, match="axes"):
        sliding_window(pointwise, img, window=(8, 8), num_classes=3)
    with pytest.raises(InvalidArgumentError, match="mirror axis"):
        sliding_window(pointwise, img, window=(8, 8, 8), num_classes=3, mirror_axes=(3,))


def test_bf16_falls_back_to_fp32_on_a_cpu_without_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    """An AVX2-only CPU (AMD EPYC here) emulates bf16 about 100x slower than fp32: the planned bf16 of the shipped
    hippocampus model must run (and be recorded) as fp32 there, and an explicit bf16 is refused with the reason."""
    from deepmia.engine import runners

    monkeypatch.setattr(runners, "bf16_supported", lambda device_type=None: False)
    assert runners.resolve_precision("torch", None, "bf16", "cpu") == ("torch", "fp32")
    with pytest.raises(InvalidArgumentError, match="no native bfloat16"):
        runners.resolve_precision("torch", "bf16", "fp32", "cpu")
    monkeypatch.setattr(runners, "bf16_supported", lambda device_type=None: True)
    assert runners.resolve_precision("torch", None, "bf16", "cpu") == ("torch", "bf16")
    assert runners.resolve_precision("onnx", None, "bf16", "cpu") == ("onnx", "fp32")
