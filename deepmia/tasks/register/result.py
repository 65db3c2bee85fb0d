"""The registration :class:`RegisterResult`: the transform, the pair it maps, and its warped outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmia.image import Image
from deepmia.tasks._base import Result
from deepmia.tasks.register.classical import RegistrationResult

__all__ = ["RegisterResult"]


@dataclass
class RegisterResult(Result):
    """One registered pair.

    Attributes:
        registration: The transform (fixed-space points to moving-space points), metric and timings.
        fixed: The fixed image (the result lives on its grid).
        moving: The moving image.
        moving_label: A label map on the moving grid, warped with the image when given.
        case: A name for the pair (the moving image's case id).
    """

    task = "register"
    registration: RegistrationResult
    fixed: Image = field(repr=False)
    moving: Image = field(repr=False)
    moving_label: Image | None = field(default=None, repr=False)
    case: str = ""

    @property
    def transform(self) -> Any:
        """The fixed-to-moving :class:`~deepmia.processing.spatial_transform.SpatialTransform`."""
        return self.registration.transform

    def warped(self) -> Image:
        """The moving image resampled on the fixed grid."""
        return self.transform.apply(self.moving, reference=self.fixed)

    def measurements(self) -> list[dict[str, Any]]:
        """The similarity before and after, with its real name and sign (timings are in ``run.json``)."""
        r = self.registration
        name = _metric_name(r.metric)
        sign = -1.0 if r.metric == "mse" else 1.0  # the optimiser sees -MSE; report the MSE itself
        return [
            {"case": self.case, "target": "pair", "quantity": f"{name} before", "value": sign * r.metric_before,
             "unit": ""},
            {"case": self.case, "target": "pair", "quantity": f"{name} after", "value": sign * r.metric_after,
             "unit": ""},
        ]

    def summary(self) -> dict[str, Any]:
        """``registration.json``'s content (method, metric, values, stages, the pair's sources)."""
        return {**self.registration.summary(), "fixed": self.fixed.meta.get("source"),
                "moving": self.moving.meta.get("source")}

    def write(self, dst: str | os.PathLike[str], name: str = "", *, formats: Sequence[str] = ()) -> list[Path]:
        """Write the warped image (and label map), the transform and ``registration.json``."""
        from deepmia.io import write_image

        out = Path(dst) / name if name else Path(dst)
        out.mkdir(parents=True, exist_ok=True)
        transform = self.transform
        warped = self.warped()
        files = {"warped": out / "warped.nii.gz"}
        write_image(warped, files["warped"])
        if transform.is_linear:
            files["transform"] = transform.save(out / "transform.tfm")
        else:
            files["transform"] = transform.save(out / "transform.h5")
            files["displacement"] = transform.save(out / "displacement.nii.gz", reference=self.fixed)
        if self.moving_label is not None:
            files["warped_label"] = out / "warped_label.nii.gz"
            write_image(transform.apply(self.moving_label, reference=self.fixed), files["warped_label"])
        summary = {**self.summary(), "files": {k: v.name for k, v in files.items()}}
        (out / "registration.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
        return [*files.values(), out / "registration.json"]


def _metric_name(metric: str) -> str:
    return {"mse": "MSE", "ncc": "NCC", "mi": "MI", "lncc": "LNCC"}.get(metric, metric)
