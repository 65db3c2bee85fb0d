"""The learned-registration plan: the choices of a training run, stored as ``plan.json`` in the model folder.

Rules: intensities are mapped to [0, 1] by the 0.5th and 99.5th percentiles; the fixed image is zero-padded at
its ends to a multiple of ``multiple`` voxels per axis, and the moving image is resampled onto that grid after
matching the two intensity centres of mass (image moments; the only classical step, about a millisecond).
The network (``affine_voxelmorph``: an affine head, then a diffeomorphic VoxelMorph U-Net) does the rest of the
alignment, affine and deformable, in one forward pass. It is trained on random pairs of training cases that are
not pre-aligned beyond the moments, each moving image further moved by a random affine (rotation, scale, shift),
with local NCC similarity, bending-energy smoothness and an optional soft Dice on the label maps.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepmia.data.dataset import format_validation_error
from deepmia.errors import DatasetError, ReadError
from deepmia.tasks._plan import check_plan_task

__all__ = ["RegistrationPlan", "load_plan", "PLAN_VERSION"]

PLAN_VERSION = 2


class RegistrationPlan(BaseModel):
    """Validated content of ``plan.json`` for a learned registration model."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["registration"] = "registration"
    version: Literal[2] = PLAN_VERSION
    spatial_dims: int = Field(3, ge=2, le=3)
    network: str = "affine_voxelmorph"
    network_params: dict[str, Any] = Field(default_factory=dict)
    multiple: int = Field(16, ge=1, description="network grids are padded to a multiple of this many voxels")
    grid_shape: list[int] = Field(description="the padded training grid (the largest training case)")
    labels: list[int] = Field(default_factory=list, description="foreground label values of the Dice term")
    similarity: Literal["lncc"] = "lncc"
    lncc_kernel: int = Field(7, ge=3)
    smoothness_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    augment_rotation_deg: float = Field(10.0, ge=0, description="random rotation of moving images, per axis")
    augment_scale: float = Field(0.1, ge=0, lt=1, description="random scaling of moving images, per axis")
    augment_shift: float = Field(4.0, ge=0, description="random shift of moving images, voxels per axis")
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_epochs: int = Field(1000, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    time_budget_s: float | None = Field(600.0, gt=0)
    metric: Literal["mse", "ncc", "mi"] = Field("ncc", description="similarity of the divergence check")
    precision: Literal["bf16", "fp32"] = Field("fp32", description="training precision (measured)")
    inference_precision: Literal["bf16", "fp32"] = Field("fp32", description="forward-pass precision (measured)")
    seed: int = 0

    def save(self, path: str | PathLike[str]) -> Path:
        """Write the plan as JSON."""
        p = Path(path)
        p.write_text(json.dumps(self.model_dump(), indent=1) + "\n", encoding="utf-8")
        return p


def load_plan(model_dir: str | PathLike[str]) -> RegistrationPlan:
    """Read and validate ``model_dir/plan.json``.

    Raises:
        ReadError: The file is missing.
        DatasetError: It is not a valid registration plan.
    """
    path = Path(model_dir) / "plan.json"
    if not path.is_file():
        raise ReadError(
            "no plan.json: not a trained model folder",
            path=Path(model_dir),
            fix="train one with deepmia train register",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        check_plan_task(data, RegistrationPlan, path)
        return RegistrationPlan.model_validate(data)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"plan.json is not valid JSON: {exc}", path=path) from exc
    except ValidationError as exc:
        raise DatasetError(f"not a registration plan: {format_validation_error(exc, data)}", path=path) from exc
