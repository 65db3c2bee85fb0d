"""N4 bias-field correction and Nyúl standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError, ReadError
from deepmia.image import Image
from deepmia.processing.bias import n4
from deepmia.processing.standardize import NyulModel, fit_nyul, nyul


def biased_phantom() -> tuple[Image, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.linspace(-1, 1, 48), np.linspace(-1, 1, 48), np.linspace(-1, 1, 32), indexing="ij")
    body = x**2 + y**2 + z**2 < 0.8
    field = np.exp(0.35 * x + 0.25 * y - 0.2 * z)
    arr = (100.0 * body * field + rng.normal(0, 1.0, body.shape) + 5).astype(np.float32)
    return Image(arr[None], np.diag([2.0, 2.0, 3.0, 1.0])), body


def test_n4_flattens_a_smooth_bias_field():
    img, body = biased_phantom()
    out = n4(img, shrink=2, iterations=30)
    cv = lambda a: a[body].std() / a[body].mean()  # noqa: E731
    assert cv(out.array[0]) < 0.5 * cv(img.array[0])
    assert out.same_geometry(img, atol=1e-9)
    lo, hi = out.meta["n4_field_range"][0]
    assert hi / lo > 1.5  # the recovered field spans the simulated one's range


def test_nyul_removes_linear_scanner_differences(tmp_path):
    rng = np.random.default_rng(1)
    base, body = biased_phantom()
    train = [base.with_array(base.array * s + o) for s, o in [(1.0, 0.0), (1.8, 40.0), (0.6, -3.0)]]
    model = fit_nyul(train)
    assert model.num_images == 3 and model.landmarks[0] == 0 and model.landmarks[-1] == pytest.approx(100)
    path = tmp_path / "nyul.json"
    model.save(path)
    assert NyulModel.load(path) == model
    new = base.with_array(base.array * 2.5 + 100 + rng.normal(0, 0.1, base.shape))
    a, b = nyul(base, model=str(path)).array[0], nyul(new, model=str(path)).array[0]
    np.testing.assert_allclose(np.median(a[body]), np.median(b[body]), rtol=0.02)


def test_nyul_bad_inputs(tmp_path):
    with pytest.raises(InvalidArgumentError, match="at least one"):
        fit_nyul([])
    with pytest.raises(InvalidArgumentError, match="percentiles"):
        fit_nyul([biased_phantom()[0]], percentiles=[50, 10, 90])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ReadError, match="not a Nyúl landmark file"):
        NyulModel.load(bad)
    flat = Image(np.ones((1, 8, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError):
        fit_nyul([flat])
