"""Learned deformable registration at inference: affine (SimpleITK) then one VoxelMorph forward pass.

The network's displacement (voxels along the fixed array axes) becomes a RAS+ world field on the fixed grid and
a :class:`~deepmia.tasks.register.transforms.Transform` composed after the affine, so the output folder,
evaluation and figures are those of classical registration.
"""

from __future__ import annotations

import time
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import ReadError
from deepmia.image import Image
from deepmia.tasks.register.classical import (
    RegistrationDivergedError,
    RegistrationResult,
    normalise_intensity,
    register_images,
    similarity,
)
from deepmia.tasks.register.plan import RegistrationPlan, load_plan
from deepmia.tasks.register.transforms import Transform

__all__ = ["LearnedRegistration", "pad_to_multiple", "voxel_field_to_world"]

MULTIPLE = 16  #: network inputs are padded to a multiple of this many voxels per axis (4 poolings)


def pad_to_multiple(array: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Zero-pad the spatial axes of ``(C, *spatial)`` at their ends up to a multiple (the affine is unchanged)."""
    pads = [(0, 0)] + [(0, (-n) % multiple) for n in array.shape[1:]]
    return np.pad(array, pads)


def voxel_field_to_world(ddf: np.ndarray, grid: Image) -> Image:
    """A displacement in voxels along the grid's array axes, ``(D, *spatial)``, as RAS+ world millimetres."""
    d = grid.spatial_dims
    world = np.einsum("ij,j...->i...", grid.affine[:d, :d], ddf.astype(np.float64))
    return grid.with_array(world.astype(np.float32), kind="intensity")


class LearnedRegistration:
    """A trained registration model: its plan and network.

    Args:
        plan: The model's plan.
        network: The VoxelMorph network with its trained weights, in eval mode.
    """

    def __init__(self, plan: RegistrationPlan, network: Any) -> None:
        self.plan = plan
        self.network = network

    @classmethod
    def load(cls, model_dir: str | PathLike[str]) -> LearnedRegistration:
        """Load ``plan.json`` and ``fold_0/model_best.pt`` from a model folder.

        Raises:
            ReadError: The folder lacks the plan or the weights.
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
        net.eval()
        return cls(plan, net)

    def displacement(self, fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
        """The network's field (voxels, ``(D, *spatial)``) for two normalised single-channel arrays on one grid."""
        import torch

        shape = fixed.shape[1:]
        f = torch.from_numpy(pad_to_multiple(fixed.astype(np.float32)))[None]
        m = torch.from_numpy(pad_to_multiple(moving.astype(np.float32)))[None]
        with torch.inference_mode():
            _, ddf = self.network(m, f)
        return ddf[0][(slice(None), *[slice(0, n) for n in shape])].float().numpy()

    def register(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        check_divergence: bool = True,
        **affine_options: Any,
    ) -> RegistrationResult:
        """Affine registration, then the network's deformable field on the fixed grid.

        Args:
            fixed: Fixed image.
            moving: Moving image.
            fixed_mask: Mask for the affine stage's metric.
            moving_mask: Mask for the affine stage's metric.
            check_divergence: Raise when the final similarity is worse than the identity's.
            **affine_options: Options of :func:`~deepmia.tasks.register.classical.register_images` for the affine
                stage (default metric: the plan's).

        Raises:
            RegistrationDivergedError: The result is worse than the start.
        """
        start = time.perf_counter()
        affine_options.setdefault("metric", self.plan.affine_metric)
        affine_options.pop("deformable", None)
        affine = register_images(
            fixed, moving, method="affine", fixed_mask=fixed_mask, moving_mask=moving_mask, **affine_options
        )
        t0 = time.perf_counter()
        fixed_n = normalise_intensity(fixed)
        moving_n = affine.transform.apply(normalise_intensity(moving), reference=fixed)
        ddf = self.displacement(fixed_n.array, moving_n.array)
        dense = Transform.from_displacement(voxel_field_to_world(ddf, fixed))
        transform = dense.then(affine.transform)
        warped = transform.apply(normalise_intensity(moving), reference=fixed)
        mask = None if fixed_mask is None else fixed_mask.array[0] != 0
        after = similarity(fixed_n.array[0], warped.array[0], affine.metric, mask=mask)
        stages = [*affine.stages, {"stage": "network", "seconds": round(time.perf_counter() - t0, 3), "metric": after}]
        if check_divergence and after < affine.metric_before:
            raise RegistrationDivergedError(
                f"learned registration diverged: {affine.metric} similarity went from {affine.metric_before:.4g} "
                f"to {after:.4g}",
                path=moving.meta.get("source"),
                fix="the pair may be unlike the training data; try --method deformable",
            )
        return RegistrationResult(
            transform=transform,
            method="learned",
            metric=affine.metric,
            metric_before=affine.metric_before,
            metric_after=after,
            seconds=time.perf_counter() - start,
            stages=stages,
        )
