"""The accumulator shape every metric family shares, and the per-column summary with bootstrap intervals."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from deepmia.errors import InvalidArgumentError
from deepmia.metrics.bootstrap import bootstrap_ci


class Accumulator(ABC):
    """Collects per-case results (:meth:`update`), summarises them (:meth:`aggregate`), forgets them (:meth:`reset`).

    Subclasses compute a case's result with a pure kernel function in :meth:`update` and keep only what
    :meth:`aggregate` needs (per-case rows, or small per-case arrays), never whole volumes.

    Args:
        n_resamples: Bootstrap resamples for the confidence intervals (0: no intervals).
        level: Coverage of the intervals.
        method: Bootstrap interval method, ``"percentile"`` or ``"bca"``.
        seed: Seed of the bootstrap resampling.
    """

    def __init__(self, *, n_resamples: int = 2000, level: float = 0.95, method: str = "percentile", seed: int = 0):
        if int(n_resamples) < 0:
            raise InvalidArgumentError(f"n_resamples={n_resamples!r} must be >= 0 (0 turns intervals off)")
        self.n_resamples = int(n_resamples)
        self.level = level
        self.method = method
        self.seed = seed
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Forget every case seen so far."""

    @abstractmethod
    def update(self, *args: Any, **kwargs: Any) -> Any:
        """Compute one case's metrics, remember them, and return them."""

    @abstractmethod
    def aggregate(self) -> dict[str, Any]:
        """Summary over the cases seen so far, with bootstrap confidence intervals."""

    def summarise(self, values: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """Summary of one metric over cases; see :func:`summarise`."""
        return summarise(values, n_resamples=self.n_resamples, level=self.level, method=self.method, seed=self.seed)


def default_case_id(case_id: str | None, seen: int) -> str:
    """The given case id, or a numbered one (``case_00003``) when none was given."""
    return f"case_{seen:05d}" if case_id is None else str(case_id)


def summarise(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 2000,
    level: float = 0.95,
    method: str = "percentile",
    seed: int = 0,
) -> dict[str, Any]:
    """Mean, standard deviation, median and bootstrap interval of the finite values of one metric over cases.

    Non-finite values (NaN: undefined; inf: e.g. a distance to an empty mask) are not averaged; they are counted
    in ``n_nan`` and ``n_inf`` so a reader sees how many cases the mean leaves out.

    Returns:
        ``{"n", "mean", "std", "median", "ci_low", "ci_high", "n_nan", "n_inf"}``; statistics are NaN when no case
        is finite, the interval is NaN with fewer than 2 finite cases or ``n_resamples == 0``.
    """
    arr = np.asarray(values, dtype=float).ravel()
    finite = arr[np.isfinite(arr)]
    out: dict[str, Any] = {
        "n": int(finite.size),
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        "median": float(np.median(finite)) if finite.size else float("nan"),
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "n_nan": int(np.isnan(arr).sum()),
        "n_inf": int(np.isinf(arr).sum()),
    }
    if finite.size >= 2 and n_resamples > 0:
        ci = bootstrap_ci(finite, n_resamples=n_resamples, level=level, method=method, seed=seed)
        out["ci_low"], out["ci_high"] = ci.low, ci.high
    return out
