"""Bootstrap intervals against scipy.stats.bootstrap and the normal theory of the mean; paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from deepmia.errors import InvalidArgumentError
from deepmia.metrics import bootstrap_ci, paired_bootstrap_ci
from deepmia.metrics._base import summarise


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_interval_agrees_with_scipy(method):
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, size=80)  # skewed, so BCa and percentile differ
    ours = bootstrap_ci(x, n_resamples=4000, method=method, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method=method, rng=np.random.default_rng(2))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)
    assert ours.estimate == pytest.approx(x.mean())


def test_vectorised_and_generic_paths_give_the_same_interval():
    x = np.random.default_rng(3).normal(size=40)
    fast = bootstrap_ci(x, n_resamples=500, seed=4, method="bca")
    slow = bootstrap_ci(x, statistic=lambda v: float(np.mean(v)), n_resamples=500, seed=4, method="bca")
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high))


def test_mean_interval_width_matches_normal_theory():
    x = np.random.default_rng(5).normal(size=400)
    ci = bootstrap_ci(x, n_resamples=3000)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(x.size), rel=0.1)


def test_tuple_data_resamples_cases_together():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(size=200)

    def auc(yy, ss):
        return stats.mannwhitneyu(ss[yy == 1], ss[yy == 0]).statistic / (yy.sum() * (1 - yy).sum())

    ci = bootstrap_ci((y, s), statistic=auc, n_resamples=300)
    assert ci.low < ci.estimate < ci.high and ci.n_cases == 200


def test_paired_difference_and_p_value():
    rng = np.random.default_rng(7)
    case = rng.normal(0.8, 0.1, 60)  # shared case difficulty
    a, b = case + 0.02 + rng.normal(0, 0.01, 60), case + rng.normal(0, 0.01, 60)
    paired = paired_bootstrap_ci(a, b, n_resamples=2000)
    assert 0 < paired.low < 0.02 < paired.high < 0.04 and paired.p_value < 0.01
    unpaired_width = bootstrap_ci(a).high - bootstrap_ci(a).low
    assert paired.high - paired.low < unpaired_width / 3  # pairing removes the shared variation
    same = paired_bootstrap_ci(a, a + rng.normal(0, 1e-3, 60), n_resamples=500)
    assert same.p_value > 0.05


def test_reproducible_and_refuses_nan():
    x = np.arange(10.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        bootstrap_ci(np.array([1.0]))
    with pytest.raises(InvalidArgumentError, match="bootstrap method"):
        bootstrap_ci(x, method="bcaa")


def test_summary_counts_non_finite_values():
    out = summarise([1.0, 2.0, np.inf, np.nan, 3.0], n_resamples=100)
    assert (out["n"], out["n_inf"], out["n_nan"]) == (3, 1, 1)
    assert out["mean"] == pytest.approx(2.0) and out["ci_low"] <= 2.0 <= out["ci_high"]


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, deepmia.metrics as m; m.bootstrap_ci; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
