"""Learned registration at inference: moments initialisation, then one forward pass does affine and deformable.

The whole alignment is the network's (see :mod:`deepmia.tasks.register.plan`): the moving image is put on the
fixed grid (padded to the plan's multiple) after matching the intensity centres of mass, the network returns a
displacement in voxels on that grid, and the composed map becomes one dense RAS+ world
:class:`~deepmia.processing.spatial_transform.SpatialTransform` on the fixed grid, so the output folder, evaluation and
figures are those of classical registration. Everything runs in torch on the arrays (one resampling of the
original moving image for the divergence check); SimpleITK only receives the final field.
"""

from __future__ import annotations

import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia._validate import look_up_option
from deepmia.errors import GeometryError, InvalidArgumentError, ReadError
from deepmia.image import Image
from deepmia.nn.registration import map_points, voxel_grid
from deepmia.processing.spatial_transform import SpatialTransform
from deepmia.tasks.register.classical import (
    METRICS,
    RegistrationDivergedError,
    RegistrationResult,
    check_pair,
    rescale_intensities,
    similarity,
)
from deepmia.tasks.register.plan import RegistrationPlan, load_plan

__all__ = [
    "LearnedRegistration",
    "centre_of_mass",
    "moments_map",
    "padded_shape",
    "pad_end",
    "sample",
    "voxel_grid",
    "map_points",
    "folding_fraction",
]


def padded_shape(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """``shape`` rounded up to a multiple per axis."""
    return tuple(int(n + (-n) % multiple) for n in shape)


def pad_end(array: Any, shape: tuple[int, ...]) -> Any:
    """Zero-pad a ``(B, C, *S)`` tensor at the ends of its spatial axes up to ``shape``."""
    import torch

    out = torch.zeros((*array.shape[:2], *shape), dtype=array.dtype, device=array.device)
    out[(slice(None), slice(None), *[slice(0, n) for n in array.shape[2:]])] = array
    return out


def centre_of_mass(image: Image, *, mask: Image | None = None) -> np.ndarray:
    """Intensity centre of mass of a non-negative single-channel image (in ``mask``), RAS+ world mm."""
    weights = image.array[0].astype(np.float64)
    if mask is not None:
        weights = weights * (mask.array[0] != 0)
    total = weights.sum()
    if total <= 0:
        return image.voxel_to_world((np.array(image.spatial_shape) - 1) / 2.0)[0]
    index = [
        np.tensordot(weights.sum(tuple(a for a in range(weights.ndim) if a != k)), np.arange(n), 1)
        for k, n in enumerate(weights.shape)
    ]
    return image.voxel_to_world(np.array(index) / total)[0]


def moments_map(
    fixed_affine: np.ndarray, fixed_com: np.ndarray, moving_affine: np.ndarray, moving_com: np.ndarray
) -> np.ndarray:
    """The 4x4 map of fixed voxel indices to moving voxel indices: world identity shifted so the centres meet."""
    shift = np.eye(4)
    shift[:3, 3] = np.asarray(moving_com) - np.asarray(fixed_com)
    return np.linalg.inv(moving_affine) @ shift @ fixed_affine


def sample(array: Any, positions: Any, *, mode: str = "bilinear") -> Any:
    """Sample ``(B, C, *S)`` at voxel positions ``(B, D, *shape)`` (array axes); zero outside."""
    import torch
    import torch.nn.functional as F

    # grid_sample wants normalised (x, y, z), the last array axis first, channels last
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in reversed(array.shape[2:])], dtype=positions.dtype)
    with torch.autocast(positions.device.type, enabled=False):
        grid = torch.addcmul(torch.tensor(-1.0, dtype=positions.dtype), positions.flip(1).movedim(1, -1), scale)
        return F.grid_sample(array.float(), grid, mode=mode, padding_mode="zeros", align_corners=True)


def folding_fraction(positions: Any) -> float:
    """Fraction of voxels where the map ``positions`` (``(1, D, *shape)``, voxels) has a Jacobian det <= 0."""
    from deepmia.metrics.registration import jacobian_statistics

    displacement = positions[0] - voxel_grid(tuple(positions.shape[2:]), positions.dtype, positions.device)
    return jacobian_statistics(displacement.numpy(), spacing=1.0, units="voxel")["folding_fraction"]


class LearnedRegistration:
    """A trained registration model: its plan and network.

    Args:
        plan: The model's plan.
        network: The network with its trained weights, in eval mode.
    """

    def __init__(self, plan: RegistrationPlan, network: Any) -> None:
        self.plan = plan
        self.network = network

    @classmethod
    def load(cls, model_dir: str | PathLike[str], *, device: Any = "cpu") -> LearnedRegistration:
        """Load ``plan.json`` and ``fold_0/model_best.pt`` from a model folder onto ``device``.

        Raises:
            ReadError: The folder lacks the plan or the weights.
            DatasetError: The plan is invalid (for example from an older version: retrain).
        """
        import torch

        from deepmia.nn import build_network

        plan = load_plan(model_dir)
        weights = Path(model_dir) / "fold_0" / "model_best.pt"
        if not weights.is_file():
            raise ReadError(
                "no fold_0/model_best.pt in the model folder",
                path=Path(model_dir),
                fix="train the model first (deepmia train register)",
            )
        net = build_network(plan.network, spatial_dims=plan.spatial_dims, **plan.network_params)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return cls(plan, net.to(device).eval())

    def positions(self, fixed: Any, moving: Any, initial: np.ndarray, *, precision: str | None = None) -> Any:
        """Moving voxel positions ``(1, D, *fixed grid)`` of the fixed voxels: the network's map after ``initial``.

        Args:
            fixed: Normalised fixed array, a ``(1, 1, *S)`` tensor whose sides are multiples of ``plan.multiple``.
            moving: Normalised moving array, a ``(1, 1, *S_m)`` tensor.
            initial: Homogeneous fixed-voxel to moving-voxel map (:func:`moments_map`).
            precision: Forward-pass precision (default: the plan's ``inference_precision``).
        """
        import torch

        from deepmia.engine.runtime import autocast

        grid = voxel_grid(tuple(fixed.shape[2:]))[None]
        moved = sample(moving, map_points(initial, grid))
        dev = next(self.network.parameters()).device
        with torch.inference_mode(), autocast(precision or self.plan.inference_precision, dev.type):
            field = getattr(self.network, "field", self.network)  # an exported network's runner is the field
            ddf = field(moved.to(dev), fixed.to(dev))
        return map_points(initial, grid + ddf.float().cpu())

    def register(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        check_divergence: bool = True,
        metric: str | None = None,
        **options: Any,
    ) -> RegistrationResult:
        """Register with one forward pass; the result is one dense transform on the fixed grid.

        Args:
            fixed: Fixed image.
            moving: Moving image.
            fixed_mask: Region of the fixed image for the initial moments and the similarity check.
            moving_mask: Region of the moving image for the initial moments.
            check_divergence: Raise when the final similarity is worse than the identity's.
            metric: Similarity of the divergence check (default: the plan's).
            **options: Options of classical registration are refused: the network has none.

        Raises:
            GeometryError: See :func:`~deepmia.tasks.register.classical.check_pair`; images of other dimensions
                than the model's.
            InvalidArgumentError: Classical options were given.
            RegistrationDivergedError: The result is worse than the start, or not finite.
        """
        import torch

        if options:
            raise InvalidArgumentError(
                f"learned registration takes no classical options ({', '.join(sorted(options))})",
                fix="drop them, or use --method deformable",
            )
        metric = look_up_option(metric or self.plan.metric, METRICS, what="metric")
        check_pair(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask)
        if fixed.spatial_dims != self.plan.spatial_dims:
            raise GeometryError(
                f"the model registers {self.plan.spatial_dims}D images, got {fixed.spatial_dims}D",
                path=fixed.meta.get("source"),
                fix="use --method deformable for these images",
            )
        start = time.perf_counter()
        fixed_n, moving_n = rescale_intensities(fixed), rescale_intensities(moving)
        initial = moments_map(
            fixed.affine,
            centre_of_mass(fixed_n, mask=fixed_mask),
            moving.affine,
            centre_of_mass(moving_n, mask=moving_mask),
        )
        shape = fixed.spatial_shape
        f = pad_end(torch.from_numpy(fixed_n.array)[None], padded_shape(shape, self.plan.multiple))
        m = torch.from_numpy(moving_n.array)[None]
        t0 = time.perf_counter()
        pos = self.positions(f, m, initial)[(slice(None), slice(None), *[slice(0, n) for n in shape])]
        seconds = time.perf_counter() - t0
        if not torch.isfinite(pos).all():
            raise RegistrationDivergedError(
                "learned registration diverged: the network's field is not finite",
                path=moving.meta.get("source"),
                fix="the pair may be unlike the training data; try --method deformable",
            )
        mask = None if fixed_mask is None else fixed_mask.array[0] != 0
        identity = map_points(np.linalg.inv(moving.affine) @ fixed.affine, voxel_grid(shape)[None])
        before = similarity(fixed_n.array[0], sample(m, identity)[0, 0].numpy(), metric, mask=mask)
        after = similarity(fixed_n.array[0], sample(m, pos)[0, 0].numpy(), metric, mask=mask)
        if check_divergence and after < before:
            raise RegistrationDivergedError(
                f"learned registration diverged: {metric} similarity went from {before:.4g} to {after:.4g}",
                path=moving.meta.get("source"),
                fix="the pair may be unlike the training data; try --method deformable",
            )
        world = map_points(moving.affine, pos)[0] - map_points(fixed.affine, voxel_grid(shape)[None])[0]
        transform = SpatialTransform.from_displacement(fixed.with_array(world.numpy(), kind="intensity"))
        return RegistrationResult(
            transform=transform,
            method="learned",
            metric=metric,
            metric_before=before,
            metric_after=after,
            seconds=time.perf_counter() - start,
            stages=[
                {"stage": "moments", "seconds": round(t0 - start, 4)},
                {"stage": "network", "seconds": round(seconds, 4), "metric": after},
            ],
        )
