"""Registration metrics: label overlap of warped structures, landmark error, Jacobian determinant, inverse consistency.

Displacement fields are arrays ``(D, X, Y[, Z])``: component ``i`` is the displacement along array axis ``i``
(the mapping is ``phi(x) = x + u(x)``, sampling the moving image at ``phi(x)`` for each fixed voxel ``x``).
``units="mm"`` means displacements in millimetres along the voxel axes (so ``spacing`` converts between
the two; for an oblique grid, express the field along the voxel axes first); ``units="voxel"`` means
displacements in voxels. The Jacobian determinant is the same number in both units (it is invariant to the
per-axis scaling), but the conversion must be right, so ``spacing`` is always given explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from deepmia._validate import look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.metrics._base import Accumulator, default_case_id
from deepmia.metrics.segmentation import check_spacing, segmentation_metrics

__all__ = [
    "label_overlap",
    "target_registration_error",
    "jacobian_determinant",
    "jacobian_statistics",
    "inverse_consistency_error",
    "RegistrationAccumulator",
]


def label_overlap(
    warped_label: np.ndarray,
    fixed_label: np.ndarray,
    *,
    spacing: Sequence[float] | float,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    percentile: float = 95.0,
) -> dict[str, Any]:
    """Dice and HD95 per structure of a warped moving label map against the fixed label map.

    Uses the segmentation kernel (:func:`deepmia.metrics.segmentation.segmentation_metrics`), so empty
    structures follow its conventions.

    Args:
        warped_label: Moving label map resampled onto the fixed grid (nearest neighbour).
        fixed_label: Fixed label map.
        spacing: Fixed-grid voxel size in mm.
        labels: Structures to score (default: every non-zero label in either map).
        percentile: Hausdorff percentile.

    Returns:
        ``{"per_label": {label: {"dice", "hd95", "pred_empty", "gt_empty"}}, "mean_dice", "mean_hd95"}``; the
        means leave out structures missing from both maps (Dice) or from either map (HD95).
    """
    scores = segmentation_metrics(warped_label, fixed_label, spacing=spacing, labels=labels, percentile=percentile)
    per_label = {
        label: {"dice": s.dice, "hd95": s.hd95, "pred_empty": s.pred_empty, "gt_empty": s.gt_empty}
        for label, s in scores.items()
    }
    dice = [s.dice for s in scores.values() if not (s.pred_empty and s.gt_empty)]
    hd = [s.hd95 for s in scores.values() if not (s.pred_empty or s.gt_empty)]
    return {
        "per_label": per_label,
        "mean_dice": float(np.mean(dice)) if dice else float("nan"),
        "mean_hd95": float(np.mean(hd)) if hd else float("nan"),
    }


def target_registration_error(
    fixed_points: Any, warped_points: Any, *, spacing: Sequence[float] | float | None
) -> dict[str, Any]:
    """Target registration error: Euclidean distance between corresponding landmarks.

    Args:
        fixed_points: Landmarks in the fixed image, ``(N, D)``.
        warped_points: The corresponding moving landmarks mapped into the fixed image, ``(N, D)``.
        spacing: ``None`` when the points are already in mm (world coordinates); otherwise the points are voxel
            indices and ``spacing`` (mm per axis) converts them.

    Returns:
        ``{"per_point": (N,) distances in mm, "mean", "std", "median", "max", "p95"}``.
    """
    a, b = np.asarray(fixed_points, dtype=float), np.asarray(warped_points, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] == 0 or a.shape[1] not in (2, 3):
        raise InvalidArgumentError(
            f"landmarks must be two non-empty (N, 2) or (N, 3) arrays of equal shape, got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidArgumentError("landmarks hold non-finite coordinates")
    scale = 1.0 if spacing is None else check_spacing(spacing, a.shape[1])
    d = np.linalg.norm((a - b) * scale, axis=1)
    return {
        "per_point": d,
        "mean": float(d.mean()),
        "std": float(d.std(ddof=1)) if d.size > 1 else 0.0,
        "median": float(np.median(d)),
        "max": float(d.max()),
        "p95": float(np.percentile(d, 95)),
    }


def _field(displacement: Any, spacing: Any, units: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated field in voxel units ``(D, *spatial)`` and the spacing."""
    units = look_up_option(units, ("mm", "voxel"), what="displacement units")
    u = np.asarray(displacement)
    if u.ndim not in (3, 4) or u.shape[0] != u.ndim - 1:
        raise InvalidArgumentError(
            f"displacement field must be (2, X, Y) or (3, X, Y, Z), got shape {u.shape}",
            fix="put the vector components first",
        )
    if min(u.shape[1:]) < 2:
        raise InvalidArgumentError(f"displacement field needs at least 2 voxels per axis, got {u.shape[1:]}")
    if not np.isfinite(u).all():
        raise InvalidArgumentError("displacement field holds non-finite values")
    sp = check_spacing(spacing, u.shape[0])
    u = u.astype(np.result_type(u.dtype, np.float32), copy=False)
    if units == "mm":
        u = u / sp.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype)
    return u, sp


def jacobian_determinant(displacement: Any, *, spacing: Sequence[float] | float, units: str = "mm") -> np.ndarray:
    """Voxel-wise Jacobian determinant of ``phi(x) = x + u(x)``.

    Derivatives are central differences inside the grid and one-sided at its faces (``numpy.gradient``), so
    an affine field gives its exact determinant everywhere.

    Args:
        displacement: Field ``(D, X, Y[, Z])``.
        spacing: Voxel size in mm per axis.
        units: ``"mm"`` or ``"voxel"`` (see the module docstring).

    Returns:
        Determinant per voxel, shape ``(X, Y[, Z])``; values <= 0 are folds.
    """
    u, _ = _field(displacement, spacing, units)
    d = u.shape[0]
    # J[i][j] = d phi_i / d x_j in voxel units (the determinant equals the one in mm)
    jac = [[None] * d for _ in range(d)]
    for i in range(d):
        grads = np.gradient(u[i])
        for j in range(d):
            jac[i][j] = grads[j] + (1.0 if i == j else 0.0)
    if d == 2:
        return jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    return (
        jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
        - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
        + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
    )


def _mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    m = np.asarray(mask).astype(bool)
    if m.shape != shape:
        raise InvalidArgumentError(f"mask shape {m.shape} differs from the field's grid {shape}")
    if not m.any():
        raise InvalidArgumentError("mask is empty")
    return m


def jacobian_statistics(
    displacement: Any, *, spacing: Sequence[float] | float, units: str = "mm", mask: Any = None
) -> dict[str, float]:
    """Summary of the Jacobian determinant: folding fraction and spread.

    Args:
        displacement: Field ``(D, X, Y[, Z])``.
        spacing: Voxel size in mm per axis.
        units: ``"mm"`` or ``"voxel"``.
        mask: Optional boolean region (e.g. the brain) over which the statistics are taken.

    Returns:
        ``{"folding_fraction" (det <= 0), "n_folding", "mean", "std", "min", "max", "std_log"}``; ``std_log`` is
        the standard deviation of ``log(det)`` over the non-folding voxels (a smoothness measure used by Learn2Reg).
    """
    det = jacobian_determinant(displacement, spacing=spacing, units=units)
    values = det[_mask(mask, det.shape)].astype(np.float64)
    folding = values <= 0
    positive = values[~folding]
    return {
        "folding_fraction": float(folding.mean()),
        "n_folding": int(folding.sum()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "std_log": float(np.log(positive).std()) if positive.size else float("nan"),
    }


def inverse_consistency_error(
    forward: Any, backward: Any, *, spacing: Sequence[float] | float, units: str = "mm", mask: Any = None
) -> dict[str, Any]:
    """Inverse consistency of a forward/backward displacement pair: ``|u_f(x) + u_b(x + u_f(x))|`` in mm.

    For a perfectly inverse pair the composition is the identity and the error is zero. ``u_b`` is sampled at
    ``x + u_f(x)`` with linear interpolation (edge values continue outside the grid).

    Args:
        forward: Forward field ``(D, X, Y[, Z])``.
        backward: Backward field on the same grid.
        spacing: Voxel size in mm per axis.
        units: ``"mm"`` or ``"voxel"`` for both fields.
        mask: Optional boolean region for the statistics.

    Returns:
        ``{"error_map" (mm per voxel), "mean", "median", "p95", "max"}``.
    """
    uf, sp = _field(forward, spacing, units)
    ub, _ = _field(backward, spacing, units)
    if uf.shape != ub.shape:
        raise InvalidArgumentError(f"forward field {uf.shape} and backward field {ub.shape} differ in shape")
    grid = np.indices(uf.shape[1:], dtype=uf.dtype)
    where = grid + uf
    ub_at = np.stack([ndimage.map_coordinates(c, where, order=1, mode="nearest") for c in ub])
    residual = (uf + ub_at) * sp.reshape((-1,) + (1,) * (uf.ndim - 1))
    error = np.sqrt(np.sum(residual.astype(np.float64) ** 2, axis=0))
    values = error[_mask(mask, error.shape)]
    return {
        "error_map": error,
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


class RegistrationAccumulator(Accumulator):
    """Per-pair registration metrics over a dataset, summarised with bootstrap intervals over pairs.

    Each :meth:`update` scores one registered pair with whatever it is given: warped and fixed label maps
    (Dice/HD95 per structure), a displacement field (Jacobian statistics), landmarks (TRE). Columns a pair
    lacks are NaN and counted, not averaged.

    Args:
        labels: Structures scored in the label maps (or ``{label: name}``); ``None`` scores every label found.
        n_resamples: Bootstrap resamples (0: no intervals).
        level: Interval coverage.
        method: ``"percentile"`` or ``"bca"``.
        seed: Bootstrap seed.
    """

    COLUMNS = ("mean_dice", "mean_hd95", "folding_fraction", "jacobian_std", "std_log_jacobian", "tre_mean")

    def __init__(
        self,
        labels: Sequence[int] | Mapping[int, str] | None = None,
        *,
        n_resamples: int = 2000,
        level: float = 0.95,
        method: str = "percentile",
        seed: int = 0,
    ) -> None:
        self.labels = labels
        super().__init__(n_resamples=n_resamples, level=level, method=method, seed=seed)

    def reset(self) -> None:
        """Forget every pair."""
        self._rows: list[dict[str, Any]] = []

    def update(
        self,
        *,
        spacing: Sequence[float] | float,
        warped_label: np.ndarray | None = None,
        fixed_label: np.ndarray | None = None,
        displacement: np.ndarray | None = None,
        units: str = "mm",
        mask: np.ndarray | None = None,
        fixed_points: Any = None,
        warped_points: Any = None,
        points_in_voxels: bool = False,
        case_id: str | None = None,
    ) -> dict[str, Any]:
        """Score one pair; every group of inputs is optional, but at least one must be given.

        Args:
            spacing: Fixed-grid voxel size in mm.
            warped_label: Moving labels warped onto the fixed grid.
            fixed_label: Fixed labels.
            displacement: Field ``(D, X, Y[, Z])`` on the fixed grid.
            units: Units of ``displacement``.
            mask: Region for the Jacobian statistics.
            fixed_points: Fixed landmarks ``(N, D)``.
            warped_points: Moving landmarks mapped into the fixed image.
            points_in_voxels: Landmarks are voxel indices (converted with ``spacing``), else mm.
            case_id: Name of the pair.

        Returns:
            The pair's row (per-structure Dice and HD95 under ``"per_label"``).
        """
        row: dict[str, Any] = {"case_id": default_case_id(case_id, len(self._rows))}
        row.update({c: float("nan") for c in self.COLUMNS})
        given = False
        if (warped_label is None) != (fixed_label is None):
            raise InvalidArgumentError("label overlap needs both warped_label and fixed_label")
        if warped_label is not None:
            overlap = label_overlap(warped_label, fixed_label, spacing=spacing, labels=self.labels)
            row.update(mean_dice=overlap["mean_dice"], mean_hd95=overlap["mean_hd95"], per_label=overlap["per_label"])
            given = True
        if displacement is not None:
            jac = jacobian_statistics(displacement, spacing=spacing, units=units, mask=mask)
            row.update(
                folding_fraction=jac["folding_fraction"], jacobian_std=jac["std"], std_log_jacobian=jac["std_log"]
            )
            given = True
        if (fixed_points is None) != (warped_points is None):
            raise InvalidArgumentError("TRE needs both fixed_points and warped_points")
        if fixed_points is not None:
            tre = target_registration_error(fixed_points, warped_points, spacing=spacing if points_in_voxels else None)
            row["tre_mean"] = tre["mean"]
            given = True
        if not given:
            raise InvalidArgumentError("nothing to score: give label maps, a displacement field or landmarks")
        self._rows.append(row)
        return row

    def rows(self) -> list[dict[str, Any]]:
        """One row per pair (without the per-structure detail)."""
        return [{k: v for k, v in r.items() if k != "per_label"} for r in self._rows]

    def aggregate(self) -> dict[str, Any]:
        """``{"n_pairs", column: summary}`` for each column (see :func:`deepmia.metrics._base.summarise`)."""
        out: dict[str, Any] = {"n_pairs": len(self._rows)}
        for column in self.COLUMNS:
            out[column] = self.summarise([r[column] for r in self._rows])
        return out
