"""Frequency-domain filters: measured response on synthetic sinusoids, 2D and 3D, every kind."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing import frequency as fq

SPACING_3D = (0.5, 0.8, 1.0)


def sinusoid(freq_mm: float, axis: int, shape, spacing) -> np.ndarray:
    """A cosine of ``freq_mm`` cycles/mm along ``axis``, snapped to an exact FFT bin (no leakage)."""
    n, d = shape[axis], spacing[axis]
    k = round(freq_mm * n * d)
    coords = np.arange(n) * d
    wave = np.cos(2 * np.pi * (k / (n * d)) * coords)
    view = [1] * len(shape)
    view[axis] = n
    return np.broadcast_to(wave.reshape(view), shape)


def gain(out: np.ndarray, inp: np.ndarray) -> float:
    return float(np.std(out) / np.std(inp))


@pytest.mark.parametrize("kind", ["ideal", "butterworth", "gaussian"])
@pytest.mark.parametrize("spatial", [2, 3])
def test_bandpass_passes_the_band_and_stops_the_rest(kind, spatial):
    shape = (64, 80, 50)[:spatial]
    spacing = SPACING_3D[:spatial]
    affine = np.diag(list(spacing) + [1.0] * (4 - spatial))
    # Gaussian bands roll off gently, so its band is wider and its test frequencies further out
    low, high, inside, below, above = (
        (0.08, 0.3, 0.15, 0.03, 0.45) if kind == "gaussian" else (0.1, 0.2, 0.15, 0.02, 0.45)
    )
    order = 8
    for axis in range(spatial):
        waves = {f: sinusoid(f, axis, shape, spacing) for f in (inside, below, above)}
        for f, w in waves.items():
            img = Image(w[None].astype(np.float64), affine)
            out = fq.bandpass(img, low=low, high=high, kind=kind, order=order).array[0]
            g = gain(out, w)
            if f == inside:
                assert g > (0.7 if kind == "gaussian" else 0.95), (kind, axis, f, g)
            else:
                assert g < (0.3 if kind == "gaussian" else 0.05), (kind, axis, f, g)


def test_ideal_bandpass_response_matches_transfer_function_exactly():
    shape, spacing = (64, 80, 50), SPACING_3D
    affine = np.diag(list(spacing) + [1.0])
    freqs = [0.05, 0.12, 0.3]
    img = Image(sum(sinusoid(f, 0, shape, spacing) for f in freqs)[None], affine)
    out = fq.bandpass(img, low=0.1, high=0.2, kind="ideal").array[0]
    np.testing.assert_allclose(out, sinusoid(0.12, 0, shape, spacing), atol=1e-9)


def test_lowpass_and_highpass_split_the_spectrum():
    shape, spacing = (64, 64), (1.0, 1.0)
    img = Image((sinusoid(0.05, 0, shape, spacing) + sinusoid(0.35, 1, shape, spacing))[None])
    lo = fq.lowpass(img, cutoff=0.2, kind="ideal").array[0]
    hi = fq.highpass(img, cutoff=0.2, kind="ideal").array[0]
    np.testing.assert_allclose(lo, sinusoid(0.05, 0, shape, spacing), atol=1e-9)
    np.testing.assert_allclose(hi, sinusoid(0.35, 1, shape, spacing), atol=1e-9)
    np.testing.assert_allclose(lo + hi, img.array[0], atol=1e-9)
    for kind in ("butterworth", "gaussian"):
        lo = fq.lowpass(img, cutoff=0.2, kind=kind).array[0]
        hi = fq.highpass(img, cutoff=0.2, kind=kind).array[0]
        np.testing.assert_allclose(lo + hi, img.array[0], atol=1e-9)  # complementary


def test_cutoffs_are_in_cycles_per_mm_not_per_voxel():
    # the same physical wave on two grids gives the same gain
    for spacing in ((0.5, 0.5), (1.0, 1.0)):
        n = int(64 / spacing[0])
        w = sinusoid(0.125, 0, (n, n), spacing)
        img = Image(w[None], np.diag([*spacing, 1.0, 1.0]))
        for kind in ("butterworth", "gaussian"):
            g = gain(fq.lowpass(img, cutoff=0.125, kind=kind, order=2).array[0], w)
            assert g == pytest.approx(0.5, abs=0.01)  # gain at the cutoff is 1/2


def test_bandpass_needs_low_below_high(noisy_volume):
    with pytest.raises(InvalidArgumentError, match="below high"):
        fq.bandpass(noisy_volume, low=0.3, high=0.1)


def test_plot_response_writes_a_figure(tmp_path):
    path = tmp_path / "resp.png"
    fq.plot_response(path, "bandpass", spacing=(0.7, 0.7, 2.0), low=0.05, high=0.2, order=4)
    assert path.stat().st_size > 5000
