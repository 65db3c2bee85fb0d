"""The learned-registration plan: the choices of a training run, stored as ``plan.json`` in the model folder.

Rules: every training case is affinely registered to a template case (the one of median volume), resampled
onto the template grid padded up to a multiple of 16 voxels, and intensities are mapped to [0, 1] by the 0.5th
and 99.5th percentiles. The network (VoxelMorph, diffeomorphic) learns the deformable part between any two
such cases: local NCC similarity, bending-energy smoothness and an optional soft Dice on the label maps.
At inference the pair is first registered affinely (SimpleITK), then one forward pass gives the field.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deepmia.data.dataset import format_validation_error
from deepmia.errors import DatasetError, ReadError

__all__ = ["RegistrationPlan", "load_plan", "PLAN_VERSION"]

PLAN_VERSION = 1


class RegistrationPlan(BaseModel):
    """Validated content of ``plan.json`` for a learned registration model."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["registration"] = "registration"
    version: int = PLAN_VERSION
    spatial_dims: int = Field(3, ge=2, le=3)
    network: str = "voxelmorph"
    network_params: dict[str, Any] = Field(default_factory=dict)
    grid_shape: list[int]
    template_case: str
    labels: list[int] = Field(default_factory=list, description="foreground label values of the Dice term")
    similarity: Literal["lncc", "mse"] = "lncc"
    smoothness_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    batch_size: int = Field(2, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    max_epochs: int = Field(40, ge=1)
    steps_per_epoch: int = Field(20, ge=1)
    time_budget_s: float | None = Field(600.0, gt=0)
    affine_metric: Literal["mse", "ncc", "mi"] = "ncc"
    precision: Literal["bf16", "fp32"] = "fp32"
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
        return RegistrationPlan.model_validate(data)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"plan.json is not valid JSON: {exc}", path=path) from exc
    except ValidationError as exc:
        raise DatasetError(f"not a registration plan: {format_validation_error(exc, data)}", path=path) from exc
