"""Classification metrics: binary, multi-class (one-vs-rest) and multi-label.

Inputs are NumPy arrays:

* ``y_true``: integer class indices ``(N,)`` for binary and multi-class data, or a 0/1 indicator matrix
  ``(N, K)`` for multi-label data.
* ``y_prob``: probabilities ``(N, K)`` (rows sum to 1 for multi-class; independent per column for multi-label),
  or ``(N,)`` the positive-class probability for binary data.

AUROC is the Mann-Whitney statistic (ties count one half), with DeLong's variance computed by the fast
algorithm of Sun & Xu (2014, IEEE SPL 21:1389), which also gives the covariance of several scores on the same
cases (for the paired DeLong test). The bootstrap intervals resample cases (:mod:`deepmia.metrics.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

from deepmia._validate import check_range, look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.metrics._base import Accumulator
from deepmia.metrics.bootstrap import bootstrap_ci

__all__ = [
    "confusion_matrix",
    "accuracy",
    "balanced_accuracy",
    "f1_score",
    "roc_auc",
    "delong_roc_variance",
    "delong_ci",
    "delong_test",
    "auroc_report",
    "sensitivity_specificity",
    "threshold_for_sensitivity",
    "expected_calibration_error",
    "CalibrationBins",
    "ClassificationAccumulator",
]


def _labels(y_true: Any, what: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InvalidArgumentError(f"{what} must be a 1D array of class indices, got shape {y.shape}")
    if y.size and not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise InvalidArgumentError(f"{what} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise InvalidArgumentError(f"{what} holds negative class index {int(y.min())}")
    return y


def _binary(y_true: Any, what: str = "y_true") -> np.ndarray:
    y = _labels(y_true, what)
    if y.size and y.max() > 1:
        raise InvalidArgumentError(f"{what} must be binary (0/1) here, found class {int(y.max())}")
    return y.astype(bool)


def _scores(y_score: Any, n: int, what: str = "y_score") -> np.ndarray:
    s = np.asarray(y_score, dtype=float)
    if s.ndim != 1 or s.size != n:
        raise InvalidArgumentError(f"{what} must have one score per case ({n}), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InvalidArgumentError(f"{what} holds {int((~np.isfinite(s)).sum())} non-finite scores")
    return s


def confusion_matrix(y_true: Any, y_pred: Any, *, n_classes: int | None = None) -> np.ndarray:
    """Confusion matrix ``C[i, j]`` = number of cases of true class ``i`` predicted as ``j``.

    Args:
        y_true: True class indices ``(N,)``.
        y_pred: Predicted class indices ``(N,)``.
        n_classes: Number of classes (default: one more than the largest index seen).

    Returns:
        ``(n_classes, n_classes)`` int64 matrix (rows: truth, columns: prediction; scikit-learn's layout).
    """
    t, p = _labels(y_true), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise InvalidArgumentError(f"y_true has {t.size} cases but y_pred has {p.size}")
    k = int(max(t.max(initial=-1), p.max(initial=-1)) + 1) if n_classes is None else int(n_classes)
    if t.size and max(t.max(), p.max()) >= k:
        raise InvalidArgumentError(f"class index {int(max(t.max(), p.max()))} >= n_classes={k}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of cases predicted correctly."""
    cm = confusion_matrix(y_true, y_pred)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition, without adjustment)."""
    cm = confusion_matrix(y_true, y_pred)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present])) if present.any() else float("nan")


def f1_score(y_true: Any, y_pred: Any, *, average: str = "macro", n_classes: int | None = None) -> float | np.ndarray:
    """F1 score per class or averaged.

    Args:
        y_true: True class indices.
        y_pred: Predicted class indices.
        average: ``"binary"`` (F1 of class 1), ``"macro"`` (unweighted mean over classes present in either
            array), ``"micro"`` (from pooled counts, equal to accuracy for single-label data), ``"weighted"``
            (weighted by support) or ``"none"`` (per-class array).
        n_classes: Number of classes.

    Returns:
        The F1 score (0 where precision and recall are both 0, as scikit-learn's ``zero_division=0``).
    """
    average = look_up_option(average, ("binary", "macro", "micro", "weighted", "none"), what="F1 average")
    cm = confusion_matrix(y_true, y_pred, n_classes=n_classes)
    tp = np.diag(cm).astype(float)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if average == "none":
        return per_class
    if average == "binary":
        if cm.shape[0] > 2:
            raise InvalidArgumentError(f"average='binary' needs 2 classes, got {cm.shape[0]}", fix="use 'macro'")
        return float(per_class[1]) if cm.shape[0] == 2 else 0.0
    if average == "micro":
        return float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if average == "weighted":
        support = cm.sum(axis=1)
        return float(np.sum(per_class * support) / support.sum())
    return float(per_class[present].mean())


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sun & Xu's fast DeLong: AUCs and structural components of ``k`` scores ``(k, N)`` on labels ``y``."""
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)  # midranks within positives
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)  # midranks in the pooled sample
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tz[:, :m] - tx) / n  # per positive: fraction of negatives it outranks
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: fraction of positives that outrank it
    return auc, v10, v01


def _two_classes(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise InvalidArgumentError(
            f"AUROC needs both classes in y_true, got {int(y.sum())} positives of {y.size}",
            fix="evaluate on cases of both classes",
        )


def roc_auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve of a binary problem (ties in scores count one half)."""
    y = _binary(y_true)
    s = _scores(y_score, y.size)
    _two_classes(y)
    return float(_placements(y, s[None])[0][0])


def delong_roc_variance(y_true: Any, y_scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of one or more scores on the same cases and DeLong's covariance matrix of those AUROCs.

    Args:
        y_true: Binary labels ``(N,)``.
        y_scores: Scores ``(N,)`` or ``(k, N)`` for ``k`` classifiers.

    Returns:
        ``(aucs, covariance)`` of shapes ``(k,)`` and ``(k, k)``.
    """
    y = _binary(y_true)
    s = np.atleast_2d(np.asarray(y_scores, dtype=float))
    for row in s:
        _scores(row, y.size)
    _two_classes(y)
    auc, v10, v01 = _placements(y, s)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(s), len(s)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(s), len(s)))
    return auc, s10 / m + s01 / n


def delong_ci(y_true: Any, y_score: Any, *, level: float = 0.95) -> dict[str, float]:
    """AUROC with DeLong's normal-approximation confidence interval (clipped to [0, 1]).

    Returns:
        ``{"auc", "variance", "ci_low", "ci_high", "level"}``.
    """
    check_range("level", level, low=0.0, high=1.0)
    auc, cov = delong_roc_variance(y_true, y_score)
    half = ndtri(0.5 + level / 2.0) * np.sqrt(cov[0, 0])
    return {
        "auc": float(auc[0]),
        "variance": float(cov[0, 0]),
        "ci_low": float(max(0.0, auc[0] - half)),
        "ci_high": float(min(1.0, auc[0] + half)),
        "level": level,
    }


def delong_test(y_true: Any, y_score_a: Any, y_score_b: Any) -> dict[str, float]:
    """DeLong's paired test of two AUROCs on the same cases.

    Returns:
        ``{"auc_a", "auc_b", "difference", "z", "p_value"}`` (two-sided; ``p_value`` 1 when the scores rank
        every case identically).
    """
    auc, cov = delong_roc_variance(y_true, np.stack([np.asarray(y_score_a, float), np.asarray(y_score_b, float)]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = auc[0] - auc[1]
    z = diff / np.sqrt(var) if var > 0 else 0.0
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "difference": float(diff),
        "z": float(z),
        "p_value": float(2 * ndtr(-abs(z))),
    }


def _one_vs_rest(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indicator matrix and score matrix ``(N, K)`` for binary, multi-class or multi-label input."""
    prob = np.asarray(y_prob, dtype=float)
    truth = np.asarray(y_true)
    if prob.ndim == 1:
        y = _binary(truth)
        prob = np.stack([1.0 - prob, prob], axis=1)
        truth = np.stack([~y, y], axis=1)
    elif truth.ndim == 1:
        y = _labels(truth)
        if y.size and y.max() >= prob.shape[1]:
            raise InvalidArgumentError(f"class index {int(y.max())} but y_prob has {prob.shape[1]} columns")
        truth = np.eye(prob.shape[1], dtype=bool)[y]
    else:
        if truth.shape != prob.shape or not np.isin(truth, (0, 1)).all():
            raise InvalidArgumentError(
                f"multi-label y_true must be a 0/1 matrix shaped like y_prob {prob.shape}, got {truth.shape}"
            )
        truth = truth.astype(bool)
    if prob.shape[0] != truth.shape[0] or not np.all(np.isfinite(prob)):
        raise InvalidArgumentError(f"y_prob {prob.shape} must be finite with one row per case ({truth.shape[0]})")
    return truth, prob


def auroc_report(
    y_true: Any,
    y_prob: Any,
    *,
    class_names: Sequence[str] | None = None,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC per class (one-vs-rest) with DeLong and bootstrap intervals, and the macro average.

    For binary input (``y_prob`` of shape ``(N,)`` or two columns) only the positive class is reported and the
    macro entry equals it. The macro average over classes has a bootstrap interval over cases (DeLong's
    covariance applies to scores on one set of labels, not to different one-vs-rest splits).

    Returns:
        ``{"per_class": {name: {"auc", "delong": {...}, "bootstrap": {...}}}, "macro": {"auc", "bootstrap"}}``;
        a class without both positives and negatives gets ``auc`` NaN and is left out of the macro average.
    """
    truth, prob = _one_vs_rest(y_true, y_prob)
    k = prob.shape[1]
    binary = k == 2 and np.asarray(y_true).ndim == 1
    columns = [1] if binary else list(range(k))
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    per_class: dict[str, Any] = {}
    valid = []
    for c in columns:
        y = truth[:, c]
        if y.all() or not y.any():
            per_class[names[c]] = {"auc": float("nan"), "n_positive": int(y.sum())}
            continue
        valid.append(c)
        entry: dict[str, Any] = {"auc": roc_auc(y, prob[:, c]), "n_positive": int(y.sum())}
        entry["delong"] = delong_ci(y, prob[:, c], level=level)
        if n_resamples:
            entry["bootstrap"] = bootstrap_ci(
                (y, prob[:, c]), statistic=_auc_or_nan, n_resamples=n_resamples, level=level, seed=seed
            ).as_dict()
        per_class[names[c]] = entry
    macro: dict[str, Any] = {"auc": float(np.mean([per_class[names[c]]["auc"] for c in valid])) if valid else np.nan}
    if n_resamples and valid:
        macro["bootstrap"] = bootstrap_ci(
            (truth[:, valid], prob[:, valid]), statistic=_macro_auc, n_resamples=n_resamples, level=level, seed=seed
        ).as_dict()
    return {"per_class": per_class, "macro": macro}


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    return float(_placements(y, s[None])[0][0]) if y.any() and not y.all() else float("nan")


def _macro_auc(truth: np.ndarray, prob: np.ndarray) -> float:
    return float(np.mean([_auc_or_nan(truth[:, c], prob[:, c]) for c in range(truth.shape[1])]))


def sensitivity_specificity(y_true: Any, y_score: Any, *, threshold: float) -> dict[str, float]:
    """Sensitivity and specificity when cases with ``score >= threshold`` are called positive.

    Returns:
        ``{"threshold", "sensitivity", "specificity", "ppv", "npv", "tp", "fp", "tn", "fn"}`` (NaN where a
        denominator is zero).
    """
    y = _binary(y_true)
    s = _scores(y_score, y.size)
    called = s >= threshold
    tp, fp = int(np.sum(called & y)), int(np.sum(called & ~y))
    fn, tn = int(np.sum(~called & y)), int(np.sum(~called & ~y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "threshold": float(threshold),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_for_sensitivity(y_true: Any, y_score: Any, *, sensitivity: float) -> dict[str, float]:
    """The highest threshold whose sensitivity is at least ``sensitivity`` (the most specific such point).

    Choose it on validation data and apply it unchanged to test data.

    Returns:
        :func:`sensitivity_specificity` at that threshold.
    """
    check_range("sensitivity", sensitivity, low=0.0, high=1.0)
    y = _binary(y_true)
    s = _scores(y_score, y.size)
    if not y.any():
        raise InvalidArgumentError("threshold_for_sensitivity needs at least one positive case")
    pos = np.sort(s[y])[::-1]
    needed = max(int(np.ceil(sensitivity * pos.size - 1e-9)), 1)
    return sensitivity_specificity(y, s, threshold=float(pos[needed - 1]))


@dataclass(frozen=True)
class CalibrationBins:
    """Reliability-diagram data of equal-width confidence bins.

    Attributes:
        edges: ``n_bins + 1`` bin edges on [0, 1]; bin ``i`` holds confidences in ``(edges[i], edges[i+1]]``
            (the first bin also holds 0).
        count: Cases per bin.
        confidence: Mean predicted confidence per bin (NaN for empty bins).
        accuracy: Observed frequency per bin (NaN for empty bins).
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    def as_dict(self) -> dict[str, list[float]]:
        """Lists for JSON."""
        return {k: np.asarray(v).tolist() for k, v in asdict(self).items()}


def expected_calibration_error(y_true: Any, y_prob: Any, *, n_bins: int = 15) -> tuple[float, CalibrationBins]:
    """Expected calibration error (Guo et al. 2017) with equal-width bins, and the reliability-diagram data.

    For multi-class probabilities ``(N, K)`` the confidence is the top probability and the outcome whether the
    top class is right; for binary probabilities ``(N,)`` the confidence is the positive-class probability and
    the outcome the true label. ECE = sum over bins of ``count / N * |accuracy - confidence|``.

    Returns:
        ``(ece, bins)``.
    """
    if int(n_bins) < 1:
        raise InvalidArgumentError(f"n_bins={n_bins!r} must be >= 1")
    prob = np.asarray(y_prob, dtype=float)
    if prob.ndim == 1:
        outcome = _binary(y_true).astype(float)
        conf = prob
    else:
        y = _labels(y_true)
        if prob.shape[0] != y.size:
            raise InvalidArgumentError(f"y_prob has {prob.shape[0]} rows for {y.size} cases")
        conf = prob.max(axis=1)
        outcome = (prob.argmax(axis=1) == y).astype(float)
    if conf.size != outcome.size or conf.size == 0 or np.any((conf < 0) | (conf > 1)) or not np.isfinite(conf).all():
        raise InvalidArgumentError("y_prob must hold probabilities in [0, 1], one per case")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(idx, weights=outcome, minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / conf.size * np.abs(mean_acc[filled] - mean_conf[filled])))
    return ece, CalibrationBins(edges, count, mean_conf, mean_acc)


class ClassificationAccumulator(Accumulator):
    """Collects labels and probabilities batch by batch and reports every classification metric.

    Args:
        class_names: Names of the ``K`` classes (for binary data: two names, negative first).
        multi_label: ``y_true`` is a 0/1 matrix and each column an independent binary problem.
        threshold: Operating threshold for binary and multi-label decisions (choose it on validation);
            multi-class decisions are the argmax.
        target_sensitivity: If given, also report the threshold reaching this sensitivity (binary data).
        n_bins: Calibration bins.
        n_resamples: Bootstrap resamples for AUROC intervals (0: DeLong only).
        level: Interval coverage.
        seed: Bootstrap seed.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        *,
        multi_label: bool = False,
        threshold: float = 0.5,
        target_sensitivity: float | None = None,
        n_bins: int = 15,
        n_resamples: int = 2000,
        level: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.class_names = [str(c) for c in class_names]
        if len(self.class_names) < 2 and not multi_label:
            raise InvalidArgumentError("a classifier needs at least two classes")
        self.multi_label = multi_label
        self.threshold = threshold
        self.target_sensitivity = target_sensitivity
        self.n_bins = n_bins
        super().__init__(n_resamples=n_resamples, level=level, seed=seed)

    def reset(self) -> None:
        """Forget every case."""
        self._true: list[np.ndarray] = []
        self._prob: list[np.ndarray] = []

    def update(self, y_true: Any, y_prob: Any) -> None:
        """Add a batch: ``y_true`` ``(B,)`` (or ``(B, K)`` multi-label) and ``y_prob`` ``(B, K)``."""
        prob = np.asarray(y_prob, dtype=float)
        if prob.ndim != 2 or prob.shape[1] != len(self.class_names):
            raise InvalidArgumentError(
                f"y_prob must be (batch, {len(self.class_names)}) for classes {self.class_names}, got {prob.shape}"
            )
        truth = np.asarray(y_true)
        if truth.shape[0] != prob.shape[0]:
            raise InvalidArgumentError(f"y_true has {truth.shape[0]} cases but y_prob has {prob.shape[0]}")
        self._true.append(truth)
        self._prob.append(prob)

    def aggregate(self) -> dict[str, Any]:
        """Every metric over the cases seen so far (see the module functions for each entry)."""
        if not self._true:
            raise InvalidArgumentError("no cases to aggregate; call update() first")
        truth, prob = np.concatenate(self._true), np.concatenate(self._prob)
        out: dict[str, Any] = {"n_cases": int(truth.shape[0]), "threshold": self.threshold}
        if self.multi_label:
            per_label = {}
            for c, name in enumerate(self.class_names):
                y, s = truth[:, c].astype(int), prob[:, c]
                pred = (s >= self.threshold).astype(int)
                ece, bins = expected_calibration_error(y, s, n_bins=self.n_bins)
                per_label[name] = {
                    **sensitivity_specificity(y, s, threshold=self.threshold),
                    "accuracy": accuracy(y, pred),
                    "balanced_accuracy": balanced_accuracy(y, pred),
                    "f1": f1_score(y, pred, average="binary", n_classes=2),
                    "ece": ece,
                    "calibration_bins": bins.as_dict(),
                }
            out["per_label"] = per_label
            out["auroc"] = auroc_report(
                truth,
                prob,
                class_names=self.class_names,
                level=self.level,
                n_resamples=self.n_resamples,
                seed=self.seed,
            )
            return out
        y = _labels(truth)
        binary = len(self.class_names) == 2
        pred = (prob[:, 1] >= self.threshold).astype(int) if binary else prob.argmax(axis=1)
        k = len(self.class_names)
        ece, bins = expected_calibration_error(y, prob[:, 1] if binary else prob, n_bins=self.n_bins)
        out.update(
            accuracy=accuracy(y, pred),
            balanced_accuracy=balanced_accuracy(y, pred),
            f1_macro=f1_score(y, pred, average="macro", n_classes=k),
            f1_per_class=dict(
                zip(self.class_names, f1_score(y, pred, average="none", n_classes=k).tolist(), strict=True)
            ),
            confusion_matrix=confusion_matrix(y, pred, n_classes=k).tolist(),
            ece=ece,
            calibration_bins=bins.as_dict(),
            auroc=auroc_report(
                y, prob, class_names=self.class_names, level=self.level, n_resamples=self.n_resamples, seed=self.seed
            ),
        )
        if binary:
            out["f1"] = f1_score(y, pred, average="binary", n_classes=2)
            out["operating_point"] = sensitivity_specificity(y, prob[:, 1], threshold=self.threshold)
            if self.target_sensitivity is not None:
                out["sensitivity_target"] = threshold_for_sensitivity(
                    y, prob[:, 1], sensitivity=self.target_sensitivity
                )
        return out
