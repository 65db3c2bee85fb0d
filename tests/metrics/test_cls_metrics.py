"""Classification metrics against scikit-learn, DeLong against a direct O(mn) computation and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.metrics.classification import (
    ClassificationAccumulator,
    auroc_report,
    balanced_accuracy,
    confusion_matrix,
    delong_ci,
    delong_roc_variance,
    delong_test,
    expected_calibration_error,
    f1_score,
    roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def multiclass_data(rng, n=300, k=4):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, prob


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y, prob = multiclass_data(rng)
    pred = prob.argmax(axis=1)
    np.testing.assert_array_equal(confusion_matrix(y, pred, n_classes=4), sklearn_metrics.confusion_matrix(y, pred))
    assert balanced_accuracy(y, pred) == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, pred))
    for average in ("macro", "micro", "weighted"):
        assert f1_score(y, pred, average=average) == pytest.approx(sklearn_metrics.f1_score(y, pred, average=average))
    np.testing.assert_allclose(f1_score(y, pred, average="none"), sklearn_metrics.f1_score(y, pred, average=None))
    tied = np.round(prob, 2)  # rounding makes ties, which the rank statistics must handle
    report = auroc_report(y, tied, n_resamples=0)
    for c in range(4):
        assert report["per_class"][str(c)]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y == c, tied[:, c]))
    assert auroc_report(y, prob, n_resamples=0)["macro"]["auc"] == pytest.approx(
        sklearn_metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    )


def test_multilabel_auroc_and_binary_f1_match_sklearn():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, (200, 3))
    prob = np.clip(0.3 * truth + rng.random((200, 3)) * 0.7, 0, 1)
    report = auroc_report(truth, prob, n_resamples=0)
    assert report["macro"]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(truth, prob, average="macro"))
    pred = (prob[:, 0] >= 0.5).astype(int)
    assert f1_score(truth[:, 0], pred, average="binary") == pytest.approx(sklearn_metrics.f1_score(truth[:, 0], pred))


def delong_direct(y, s):
    """DeLong et al. (1988) structural components, written out pairwise (O(m n))."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size


def test_fast_delong_equals_direct_computation_and_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    s = np.round(y * 0.8 + rng.normal(size=400), 1)
    auc, var = delong_direct(y, s)
    fast_auc, cov = delong_roc_variance(y, s)
    assert fast_auc[0] == pytest.approx(auc) and cov[0, 0] == pytest.approx(var)
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s))
    # bootstrap variance of the AUROC agrees with DeLong's (loose: both are estimates)
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    boot = []
    for _ in range(2000):  # resample cases; the AUROC of a resample weights each pair by its multiplicity
        counts = np.bincount(rng.integers(0, y.size, y.size), minlength=y.size)
        cp, cn = counts[y == 1], counts[y == 0]
        boot.append(cp @ psi @ cn / (cp.sum() * cn.sum()))
    assert np.var(boot) == pytest.approx(var, rel=0.2)
    ci = delong_ci(y, s)
    assert ci["ci_low"] < auc < ci["ci_high"]
    assert ci["ci_high"] - ci["ci_low"] == pytest.approx(2 * 1.959964 * np.sqrt(var), rel=1e-4)


def test_delong_test_detects_a_better_score_and_not_an_identical_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    good, weak = y + rng.normal(size=500) * 0.6, y + rng.normal(size=500) * 2.0
    assert delong_test(y, good, weak)["p_value"] < 1e-3
    same = delong_test(y, good, good)
    assert same["difference"] == 0 and same["p_value"] == 1.0


def test_operating_points():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.3, 0.4, 0.7, 0.8, 0.9, 0.35])
    at = sensitivity_specificity(y, s, threshold=0.5)
    assert (at["tp"], at["fp"], at["tn"], at["fn"]) == (3, 1, 3, 2)
    assert at["sensitivity"] == pytest.approx(0.6) and at["specificity"] == pytest.approx(0.75)
    point = threshold_for_sensitivity(y, s, sensitivity=0.8)
    assert point["threshold"] == pytest.approx(0.4)
    assert point["sensitivity"] >= 0.8
    # any higher threshold misses the target
    assert sensitivity_specificity(y, s, threshold=np.nextafter(0.4, 1))["sensitivity"] < 0.8


def test_expected_calibration_error_by_hand_and_bins():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.9, 0.8, 0.3, 0.25])  # 2 bins: (0, .5] -> conf .275 acc 1 ; (.5, 1] -> conf .85 acc .5
    ece, bins = expected_calibration_error(y, p, n_bins=2)
    assert ece == pytest.approx(0.5 * abs(1 - 0.275) + 0.5 * abs(0.5 - 0.85))
    np.testing.assert_array_equal(bins.count, [2, 2])
    perfect, _ = expected_calibration_error(np.array([0, 1, 1, 1]), np.array([[0.25, 0.75]] * 4), n_bins=10)
    assert perfect == pytest.approx(0.0)


def test_accumulator_binary_report():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    p1 = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=200))))
    acc = ClassificationAccumulator(["normal", "pneumonia"], target_sensitivity=0.9, n_resamples=200)
    for start in range(0, 200, 64):
        acc.update(y[start : start + 64], np.stack([1 - p1, p1], axis=1)[start : start + 64])
    out = acc.aggregate()
    assert out["n_cases"] == 200
    assert out["auroc"]["per_class"]["pneumonia"]["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, p1))
    boot = out["auroc"]["per_class"]["pneumonia"]["bootstrap"]
    assert boot["low"] < boot["estimate"] < boot["high"]
    assert out["sensitivity_target"]["sensitivity"] >= 0.9
    assert out["f1"] == pytest.approx(sklearn_metrics.f1_score(y, p1 >= 0.5))
    with pytest.raises(InvalidArgumentError, match="batch"):
        acc.update(y[:3], np.ones((3, 3)) / 3)


def test_auroc_needs_both_classes():
    with pytest.raises(InvalidArgumentError, match="both classes"):
        roc_auc(np.ones(5, int), np.arange(5.0))


@pytest.mark.shared_data
def test_auroc_and_delong_on_pneumoniamnist_intensity_score(shared_data):
    """Real labels with a crude real score (mean image intensity): AUROC equals scikit-learn, CI holds it."""
    data = np.load(shared_data / "medmnist" / "pneumoniamnist.npz")
    y, images = data["test_labels"].ravel(), data["test_images"]
    score = images.reshape(len(y), -1).mean(axis=1)
    ci = delong_ci(y, score)
    assert ci["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, score))
    assert ci["ci_low"] < ci["auc"] < ci["ci_high"]
    report = auroc_report(y, np.stack([1 - score / 255, score / 255], axis=1), n_resamples=300)
    boot = report["per_class"]["1"]["bootstrap"]
    assert boot["high"] - boot["low"] == pytest.approx(ci["ci_high"] - ci["ci_low"], rel=0.3)
