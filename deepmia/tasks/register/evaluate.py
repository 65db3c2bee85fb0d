"""Scoring a registration run: warped-label Dice/HD95, landmark TRE, Jacobian statistics, inverse consistency.

The kernels are :mod:`deepmia.metrics.registration`; this module reads a run folder written by
``deepmia register`` (``warped.nii.gz`` gives the fixed grid, ``transform.*`` the mapping) and feeds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import GeometryError, ReadError
from deepmia.image import Image
from deepmia.metrics.registration import jacobian_statistics, label_overlap, target_registration_error
from deepmia.processing.spatial_transform import SpatialTransform

__all__ = ["field_along_axes", "transform_metrics", "evaluate_run", "find_transform", "as_2d_if"]


def field_along_axes(field: Image) -> np.ndarray:
    """A world (RAS+ mm) displacement field image expressed along its voxel axes in mm, ``(D, *spatial)``.

    This is the convention of :mod:`deepmia.metrics.registration` (``units="mm"`` with the grid's spacing).
    """
    d = field.spatial_dims
    direction = field.direction[:d, :d]
    return np.einsum("ji,j...->i...", direction, field.array.astype(np.float32))


def transform_metrics(
    transform: SpatialTransform,
    fixed_grid: Image,
    *,
    fixed_label: Image | None = None,
    warped_label: Image | None = None,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    mask: np.ndarray | None = None,
    fixed_points: Any = None,
    moving_points: Any = None,
    backward: SpatialTransform | None = None,
) -> dict[str, Any]:
    """Every metric the inputs allow, for one fixed-to-moving transform.

    Args:
        transform: Fixed-to-moving mapping.
        fixed_grid: Any image on the fixed grid.
        fixed_label: Fixed label map (with ``warped_label``: Dice and HD95 per structure).
        warped_label: Moving label map warped onto the fixed grid.
        labels: Structures to score (default: every label present).
        mask: Region of the fixed grid for Jacobian and inverse-consistency statistics (default: all).
        fixed_points: Fixed landmarks ``(N, 3)`` world RAS+ mm.
        moving_points: Corresponding moving landmarks; TRE is ``|T(fixed) - moving|`` in mm.
        backward: A moving-to-fixed registration of the same pair: inverse consistency ``|B(T(x)) - x|``.

    Returns:
        ``{"dice": {...}, "jacobian": {...}, "tre": {...}, "inverse_consistency": {...}}`` for what was given.
    """
    out: dict[str, Any] = {}
    spacing = fixed_grid.spacing
    if fixed_label is not None and warped_label is not None:
        if not warped_label.same_geometry(fixed_label):
            raise GeometryError("warped label is not on the fixed label's grid", path=fixed_label.meta.get("source"))
        overlap = label_overlap(warped_label.array[0], fixed_label.array[0], spacing=spacing, labels=labels)
        out["labels"] = {
            "mean_dice": overlap["mean_dice"],
            "mean_hd95": overlap["mean_hd95"],
            "per_label": {str(k): v for k, v in overlap["per_label"].items()},
        }
    field = transform.displacement(fixed_grid)
    out["jacobian"] = jacobian_statistics(field_along_axes(field), spacing=spacing, units="mm", mask=mask)
    if fixed_points is not None and moving_points is not None:
        tre = target_registration_error(moving_points, transform.map_points(fixed_points), spacing=None)
        before = target_registration_error(moving_points, fixed_points, spacing=None)
        out["tre"] = {
            **{k: v for k, v in tre.items() if k != "per_point"},
            "per_point": tre["per_point"].tolist(),
            "mean_before": before["mean"],
        }
    if backward is not None:
        round_trip = transform.then(backward).displacement(fixed_grid)
        err = np.sqrt((round_trip.array.astype(np.float64) ** 2).sum(0))
        values = err[mask] if mask is not None else err.ravel()
        out["inverse_consistency"] = {
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "p95": float(np.percentile(values, 95)),
            "max": float(values.max()),
        }
    return out


def as_2d_if(image: Image, dims: int) -> Image:
    """A NIfTI-read one-slice volume ``(C, X, Y, 1)`` as the 2D image it was written from, when ``dims == 2``.

    NIfTI stores 2D images with a singleton third axis and reads them back as volumes; the affine is unchanged.
    """
    if dims == 2 and image.spatial_dims == 3 and image.spatial_shape[-1] == 1:
        return image.with_geometry(image.array[..., 0], image.affine)
    return image


def find_transform(run_dir: str | PathLike[str]) -> Path:
    """The ``transform.*`` file of a run folder.

    Raises:
        ReadError: The folder holds none.
    """
    run = Path(run_dir)
    for name in ("transform.h5", "transform.tfm"):
        if (run / name).is_file():
            return run / name
    raise ReadError(
        "no transform.h5 or transform.tfm in this folder", path=run, fix="give the output folder of deepmia register"
    )


def evaluate_run(
    run_dir: str | PathLike[str],
    *,
    fixed_label: Image | None = None,
    labels: Sequence[int] | Mapping[int, str] | None = None,
    mask: Image | None = None,
    fixed_points: Any = None,
    moving_points: Any = None,
    backward_dir: str | PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score a ``deepmia register`` output folder and write ``metrics.json`` into it.

    Raises:
        ReadError: The folder lacks ``warped.nii.gz`` or a transform, or a needed file is missing.
        GeometryError: The fixed label or mask is not on the run's fixed grid.
    """
    from deepmia.io import read_image

    run = Path(run_dir)
    if not (run / "warped.nii.gz").is_file():
        raise ReadError("no warped.nii.gz in this folder", path=run, fix="give the output folder of deepmia register")
    grid = read_image(run / "warped.nii.gz")
    transform = SpatialTransform.read(find_transform(run))
    grid = as_2d_if(grid, transform.dims)
    for what, img in (("fixed label", fixed_label), ("mask", mask)):
        if img is not None and not img.same_geometry(grid):
            raise GeometryError(
                f"{what} is not on the fixed grid of this run",
                path=img.meta.get("source"),
                fix="give the label map or mask of the FIXED image",
            )
    warped_label = None
    if fixed_label is not None:
        if not (run / "warped_label.nii.gz").is_file():
            raise ReadError(
                "no warped_label.nii.gz in this folder", path=run, fix="run deepmia register with --moving-label"
            )
        warped_label = as_2d_if(read_image(run / "warped_label.nii.gz", kind="label"), transform.dims)
    backward = SpatialTransform.read(find_transform(backward_dir)) if backward_dir is not None else None
    result = transform_metrics(
        transform,
        grid,
        fixed_label=fixed_label,
        warped_label=warped_label,
        labels=labels,
        mask=None if mask is None else mask.array[0] != 0,
        fixed_points=fixed_points,
        moving_points=moving_points,
        backward=backward,
    )
    (run / "metrics.json").write_text(json.dumps(result, indent=1, default=float) + "\n", encoding="utf-8")
    return result
