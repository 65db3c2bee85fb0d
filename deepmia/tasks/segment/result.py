"""The segmentation :class:`SegmentResult`: a label map (and class probabilities) on the input's own grid."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.image import Image
from deepmia.tasks._base import Result, case_id

__all__ = ["SegmentResult", "label_map_name"]

# Formats that store label maps losslessly; anything else (JPEG, a DICOM input) gets PNG (2D) or NIfTI.
_LOSSLESS = ("nifti", "nrrd", "metaimage", "png", "tiff", "numpy")
_FLOAT_FORMATS = ("tiff", "nifti", "nrrd", "metaimage", "numpy")


def _format(name: str) -> str | None:
    from deepmia.errors import DeepmiaError
    from deepmia.io import format_of

    try:
        return format_of(name, must_exist=False)
    except DeepmiaError:
        return None


def label_map_name(name: str, spatial_dims: int) -> str:
    """File name of the label map of input ``name``: the same name where its format is lossless, else PNG/NIfTI."""
    from deepmia.io import image_stem

    if _format(name) in _LOSSLESS:
        return name
    return image_stem(name) + (".png" if spatial_dims == 2 else ".nii.gz")


def float_map_name(name: str, spatial_dims: int) -> str:
    """File name of a float map of input ``name``: its own name if its format holds floats, else TIFF/NIfTI."""
    from deepmia.io import image_stem

    if _format(name) in _FLOAT_FORMATS:
        return name
    return image_stem(name) + (".tif" if spatial_dims == 2 else ".nii.gz")


@dataclass
class SegmentResult(Result):
    """A segmentation of one image.

    Attributes:
        labels: The label map on the input's grid (shape and affine identical), kind ``label``.
        label_names: Label value -> name (background left out).
        probabilities: Class probabilities (float32, one channel per class) when they were asked for.
        image: The input image (for figures; not written).
        warnings: Notes from checking the input against the model (e.g. out of its training range).
    """

    task = "segment"
    labels: Image
    label_names: Mapping[int, str]
    probabilities: Image | None = None
    image: Image | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def case(self) -> str:
        """The case id (from the input image's ``meta``)."""
        return case_id(self.labels)

    def volumes(self) -> dict[str, dict[str, float]]:
        """Per label: voxel count and volume in mL (3D) or area in mm² (2D), from the voxel size."""
        counts = np.bincount(self.labels.array.ravel().astype(np.int64), minlength=max(self.label_names, default=0) + 1)
        voxel = float(np.prod(self.labels.spacing))
        out = {}
        for k, name in sorted(self.label_names.items()):
            n = int(counts[k]) if k < len(counts) else 0
            size = n * voxel / 1000.0 if self.labels.spatial_dims == 3 else n * voxel
            out[name] = {"voxels": n, ("volume_ml" if self.labels.spatial_dims == 3 else "area_mm2"): size}
        return out

    def light(self) -> SegmentResult:
        """This result without the input image and the probability maps (the label map stays)."""
        return replace(self, image=None, probabilities=None)

    def measurements(self) -> list[dict[str, Any]]:
        """Voxel count and volume (mL) or area (mm²) of every label."""
        rows = []
        for name, v in self.volumes().items():
            rows.append({"case": self.case, "target": name, "quantity": "voxels", "value": v["voxels"], "unit": ""})
            if "volume_ml" in v:
                rows.append({"case": self.case, "target": name, "quantity": "volume", "value": round(v["volume_ml"], 6),
                             "unit": "mL"})
            else:
                rows.append({"case": self.case, "target": name, "quantity": "area", "value": round(v["area_mm2"], 4),
                             "unit": "mm2"})
        return rows

    def summary(self) -> dict[str, Any]:
        """Case, shape, labels and their sizes."""
        return {"task": self.task, "case": self.case, "shape": list(self.labels.spatial_shape),
                "labels": {str(k): v for k, v in self.label_names.items()}, "sizes": self.volumes(),
                "warnings": self.warnings}

    def write(self, dst: str | os.PathLike[str], name: str, *, formats: Sequence[str] = ()) -> list[Path]:
        """Write the label map (lossless, see :func:`label_map_name`) and, with ``probabilities``, the class maps."""
        from deepmia.io import write_image

        dst = Path(dst)
        dims = self.labels.spatial_dims
        written = [dst / label_map_name(name, dims)]
        write_image(self.labels, written[0])
        if "probabilities" in formats and self.probabilities is not None:
            written.append(dst / "probabilities" / float_map_name(name, dims))
            write_image(self.probabilities, written[-1])
        return written
