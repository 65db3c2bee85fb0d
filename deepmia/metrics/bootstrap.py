"""Bootstrap confidence intervals that resample cases (patients, images, volumes), shared by every metric.

Cases are the unit of resampling: a per-case table (one row per case) or several per-case arrays that share
their first axis (for example labels and scores, resampled together). A statistic is any function of the
resampled data, so the same function gives the interval of a mean Dice, an AUROC or a detection CPM. The
paired version resamples the same cases for two methods and gives the interval of their difference.

Methods: ``"percentile"`` (Efron's percentile interval) and ``"bca"`` (bias-corrected and accelerated, with the
acceleration from a leave-one-case-out jackknife; Efron & Tibshirani 1993, ch. 14). Both use the same
resamples for a given seed, so results are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from deepmia._validate import check_range, look_up_option
from deepmia.errors import InvalidArgumentError

__all__ = ["ConfidenceInterval", "bootstrap_ci", "paired_bootstrap_ci", "bootstrap_indices_ci"]

_METHODS = ("percentile", "bca")
# Statistics that reduce along an ``axis`` keyword: resamples are evaluated in one vectorised call.
_VECTORISED = {np.mean, np.median, np.nanmean, np.nanmedian, np.sum, np.std, np.var}


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its bootstrap confidence interval.

    Attributes:
        estimate: The statistic on the original cases.
        low: Lower bound of the interval.
        high: Upper bound of the interval.
        level: Coverage, e.g. 0.95.
        method: ``"percentile"`` or ``"bca"``.
        n_resamples: Number of bootstrap resamples.
        n_cases: Number of cases resampled.
        p_value: Two-sided bootstrap p-value of "estimate == 0" (paired comparisons only), else ``None``.
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n_resamples: int
    n_cases: int
    p_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON reports."""
        return asdict(self)


def _as_case_arrays(data: Any, what: str) -> tuple[list[np.ndarray], bool]:
    """Return the per-case arrays in ``data`` (one array or a tuple/list of them) and whether it was a tuple."""
    is_tuple = isinstance(data, tuple)
    arrays = [np.asarray(a) for a in data] if is_tuple else [np.asarray(data)]
    if any(a.ndim == 0 for a in arrays):
        raise InvalidArgumentError(f"{what}: needs one value (row) per case, got a scalar")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise InvalidArgumentError(f"{what}: arrays must share their first (case) axis, got shapes {shapes}")
    if n < 2:
        raise InvalidArgumentError(f"{what}: a bootstrap needs at least 2 cases, got {n}")
    return arrays, is_tuple


def _check_options(n_resamples: int, level: float, method: str) -> str:
    if int(n_resamples) < 1:
        raise InvalidArgumentError(f"n_resamples={n_resamples!r} must be a positive integer")
    check_range("level", level, low=0.0, high=1.0)
    if level in (0.0, 1.0):
        raise InvalidArgumentError(f"level={level!r} must be strictly between 0 and 1 (e.g. 0.95)")
    return look_up_option(method, _METHODS, what="bootstrap method")


def _interval(
    estimate: float,
    replicates: np.ndarray,
    jackknife: Callable[[], np.ndarray] | None,
    *,
    level: float,
    method: str,
) -> tuple[float, float]:
    """Percentile or BCa bounds from bootstrap replicates (NaN replicates refused by the caller)."""
    alpha = (1.0 - level) / 2.0
    quantiles = np.array([alpha, 1.0 - alpha])
    if method == "bca" and jackknife is not None:
        # Bias correction: where the estimate sits in the bootstrap distribution (ties count half).
        below = np.mean(replicates < estimate) + 0.5 * np.mean(replicates == estimate)
        z0 = ndtri(np.clip(below, 1e-12, 1 - 1e-12))
        jk = jackknife()
        d = jk.mean() - jk
        denom = 6.0 * np.sum(d**2) ** 1.5
        accel = np.sum(d**3) / denom if denom > 0 else 0.0
        z = ndtri(quantiles)
        quantiles = ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(replicates, quantiles)
    return float(low), float(high)


def bootstrap_indices_ci(
    statistic: Callable[[np.ndarray], float],
    n_cases: int,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> ConfidenceInterval:
    """Bootstrap interval of a statistic written as a function of case indices.

    The general form behind :func:`bootstrap_ci`, for per-case data that is not an array (a list of boxes per
    image, say): ``statistic(indices)`` computes the statistic on the cases ``indices`` (with repeats).

    Args:
        statistic: Maps an int array of case indices to a float.
        n_cases: Number of cases.
        n_resamples: Number of bootstrap resamples.
        level: Coverage of the interval.
        method: ``"percentile"`` or ``"bca"``.
        seed: Seed of the resampling generator.

    Returns:
        The estimate on all cases and its interval.

    Raises:
        InvalidArgumentError: Bad options, fewer than 2 cases, or the statistic is undefined (NaN) on the data
            or on some resample (e.g. an AUROC on a resample with one class only: use more cases).
    """
    method = _check_options(n_resamples, level, method)
    if n_cases < 2:
        raise InvalidArgumentError(f"a bootstrap needs at least 2 cases, got {n_cases}")
    everything = np.arange(n_cases)
    estimate = float(statistic(everything))
    rng = np.random.default_rng(seed)
    replicates = np.array([statistic(rng.integers(0, n_cases, n_cases)) for _ in range(int(n_resamples))], float)
    _refuse_nan(estimate, replicates)

    def jackknife() -> np.ndarray:
        return np.array([statistic(np.delete(everything, i)) for i in range(n_cases)], float)

    low, high = _interval(estimate, replicates, jackknife, level=level, method=method)
    return ConfidenceInterval(estimate, low, high, level, method, int(n_resamples), n_cases)


def _refuse_nan(estimate: float, replicates: np.ndarray) -> None:
    if np.isnan(estimate):
        raise InvalidArgumentError("the statistic is NaN on the original cases (drop undefined cases first)")
    bad = int(np.isnan(replicates).sum())
    if bad:
        raise InvalidArgumentError(
            f"the statistic is NaN on {bad} of {replicates.size} bootstrap resamples",
            fix="the statistic is undefined on some resamples (e.g. one class only); use more cases",
        )


def _case_statistic(arrays: list[np.ndarray], is_tuple: bool, statistic: Callable[..., Any]):
    def on(indices: np.ndarray) -> float:
        picked = [a[indices] for a in arrays]
        return float(statistic(*picked) if is_tuple else statistic(picked[0]))

    return on


def bootstrap_ci(
    data: np.ndarray | Sequence[float] | tuple[np.ndarray, ...],
    *,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> ConfidenceInterval:
    """Bootstrap confidence interval of a statistic over cases.

    Args:
        data: Per-case values, shape ``(n_cases,)``, or a per-case table ``(n_cases, ...)``; or a tuple of such
            arrays sharing the case axis (e.g. ``(y_true, y_score)``), resampled together and passed to
            ``statistic`` as positional arguments.
        statistic: Function of the (resampled) data returning a float. NumPy reductions (``np.mean``,
            ``np.median``, ...) on a single array are evaluated over all resamples at once.
        n_resamples: Number of bootstrap resamples.
        level: Coverage of the interval.
        method: ``"percentile"`` or ``"bca"``.
        seed: Seed of the resampling generator.

    Returns:
        The estimate and its interval.

    Raises:
        InvalidArgumentError: Fewer than 2 cases, misaligned arrays, NaN values or statistic, bad options.

    Example:
        >>> ci = bootstrap_ci(np.array([0.8, 0.9, 0.85, 0.7, 0.95]), n_resamples=500)
        >>> ci.low <= ci.estimate <= ci.high
        True
    """
    arrays, is_tuple = _as_case_arrays(data, "bootstrap_ci data")
    if not is_tuple and statistic in _VECTORISED and arrays[0].ndim == 1:
        return _vectorised_ci(arrays[0], statistic, n_resamples=n_resamples, level=level, method=method, seed=seed)
    on = _case_statistic(arrays, is_tuple, statistic)
    return bootstrap_indices_ci(on, arrays[0].shape[0], n_resamples=n_resamples, level=level, method=method, seed=seed)


def _vectorised_ci(
    values: np.ndarray, statistic: Callable[..., Any], *, n_resamples: int, level: float, method: str, seed: int
) -> ConfidenceInterval:
    """Same resamples as :func:`bootstrap_indices_ci` (same seed), evaluated in chunks with one reduction call."""
    method = _check_options(n_resamples, level, method)
    values = values.astype(float)
    if statistic not in (np.nanmean, np.nanmedian) and np.isnan(values).any():
        raise InvalidArgumentError(
            f"{int(np.isnan(values).sum())} of {values.size} per-case values are NaN",
            fix="drop undefined cases explicitly, or pass statistic=np.nanmean to ignore them",
        )
    n = values.size
    rng = np.random.default_rng(seed)
    estimate = float(statistic(values))
    replicates = np.empty(int(n_resamples))
    chunk = max(1, 2_000_000 // n)
    for start in range(0, int(n_resamples), chunk):
        stop = min(start + chunk, int(n_resamples))
        idx = np.stack([rng.integers(0, n, n) for _ in range(stop - start)])
        replicates[start:stop] = statistic(values[idx], axis=1)
    _refuse_nan(estimate, replicates)

    def jackknife() -> np.ndarray:
        return np.array([statistic(np.delete(values, i)) for i in range(n)], float)

    low, high = _interval(estimate, replicates, jackknife, level=level, method=method)
    return ConfidenceInterval(estimate, low, high, level, method, int(n_resamples), n)


def paired_bootstrap_ci(
    data_a: np.ndarray | tuple[np.ndarray, ...],
    data_b: np.ndarray | tuple[np.ndarray, ...],
    *,
    statistic: Callable[..., Any] = np.mean,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> ConfidenceInterval:
    """Interval of ``statistic(a) - statistic(b)`` for two methods evaluated on the same cases.

    Each resample draws one set of cases and evaluates both methods on it, so the between-case variation
    shared by the methods cancels. The p-value is the two-sided bootstrap p-value of "no difference":
    twice the fraction of resampled differences on the far side of zero (at least ``1 / n_resamples``).

    Args:
        data_a: Per-case data of method A (as in :func:`bootstrap_ci`).
        data_b: Per-case data of method B, same cases in the same order.
        statistic: Function of one method's (resampled) data.
        n_resamples: Number of bootstrap resamples.
        level: Coverage of the interval.
        method: ``"percentile"`` or ``"bca"``.
        seed: Seed of the resampling generator.

    Returns:
        The difference A - B with its interval and ``p_value``.

    Raises:
        InvalidArgumentError: The two methods have a different number of cases, or as :func:`bootstrap_ci`.
    """
    arrays_a, tuple_a = _as_case_arrays(data_a, "paired_bootstrap_ci data_a")
    arrays_b, tuple_b = _as_case_arrays(data_b, "paired_bootstrap_ci data_b")
    if arrays_a[0].shape[0] != arrays_b[0].shape[0]:
        raise InvalidArgumentError(
            f"paired bootstrap needs the same cases for both methods, got {arrays_a[0].shape[0]} and "
            f"{arrays_b[0].shape[0]} cases"
        )
    on_a = _case_statistic(arrays_a, tuple_a, statistic)
    on_b = _case_statistic(arrays_b, tuple_b, statistic)
    replicates: list[float] = []

    def difference(indices: np.ndarray) -> float:
        value = on_a(indices) - on_b(indices)
        replicates.append(value)
        return value

    ci = bootstrap_indices_ci(
        difference, arrays_a[0].shape[0], n_resamples=n_resamples, level=level, method=method, seed=seed
    )
    boot = np.array(replicates[1 : 1 + int(n_resamples)])  # skip the estimate, ignore jackknife values
    tail = min(np.mean(boot <= 0.0), np.mean(boot >= 0.0))
    p_value = float(min(1.0, max(2.0 * tail, 1.0 / boot.size)))
    return ConfidenceInterval(ci.estimate, ci.low, ci.high, level, ci.method, ci.n_resamples, ci.n_cases, p_value)
