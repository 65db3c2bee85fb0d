"""The registration :class:`Predictor`: one object that registers pairs (classical or learned) and writes results.

``deepmia register``, ``deepmia predict MODEL_DIR`` and batch jobs are thin adapters over it.
Output folder: ``warped.nii.gz`` (moving on the fixed grid), ``transform.tfm`` (linear) or ``transform.h5``
(deformable, an ITK composite), ``displacement.nii.gz`` (deformable: the dense field on the fixed grid, ITK
convention), ``warped_label.nii.gz`` (with a moving label map), ``registration.json`` and, on request,
``checkerboard.png``, ``overlay.png``, ``deformation_grid.png``.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

from deepmia._validate import look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks.register.classical import RegistrationResult, check_pair, register_images

__all__ = ["Predictor", "write_outputs", "PREDICT_METHODS"]

PREDICT_METHODS = ("rigid", "affine", "deformable", "learned")


class Predictor:
    """Registers moving images to fixed images with one method and one set of options.

    Args:
        method: ``"rigid"``, ``"affine"``, ``"deformable"`` or ``"learned"``.
        model_dir: Trained model folder (``deepmia train register``); required for ``"learned"``.
        **options: Options of :func:`~deepmia.tasks.register.classical.register_images` (metric, deformable,
            levels, iterations, ...); for ``"learned"`` they apply to its affine stage.

    Raises:
        InvalidArgumentError: Unknown method, or ``"learned"`` without a model folder.
    """

    def __init__(self, *, method: str = "deformable", model_dir: str | PathLike[str] | None = None, **options: Any):
        self.method = look_up_option(method, PREDICT_METHODS, what="registration method")
        self.options = options
        self.model = None
        if self.method == "learned":
            if model_dir is None:
                raise InvalidArgumentError("--method learned needs a trained model", fix="pass --model MODEL_DIR")
            from deepmia.tasks.register.learned import LearnedRegistration

            self.model = LearnedRegistration.load(model_dir)
        elif model_dir is not None:
            raise InvalidArgumentError(f"--model is only used with --method learned, not {self.method}")

    def register(
        self,
        fixed: Image,
        moving: Image,
        *,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
    ) -> RegistrationResult:
        """Register one pair; the result's transform maps fixed-space points to moving-space points."""
        if self.model is not None:
            return self.model.register(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, **self.options)
        return register_images(
            fixed, moving, method=self.method, fixed_mask=fixed_mask, moving_mask=moving_mask, **self.options
        )

    def run(
        self,
        fixed: Image,
        moving: Image,
        out_dir: str | PathLike[str],
        *,
        moving_label: Image | None = None,
        fixed_mask: Image | None = None,
        moving_mask: Image | None = None,
        figure: bool = False,
    ) -> dict[str, Any]:
        """Register and write the output folder (see the module docstring); returns ``registration.json``'s content."""
        check_pair(fixed, moving, moving_label=moving_label, fixed_mask=fixed_mask, moving_mask=moving_mask)
        result = self.register(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask)
        return write_outputs(out_dir, fixed, moving, result, moving_label=moving_label, figure=figure)


def write_outputs(
    out_dir: str | PathLike[str],
    fixed: Image,
    moving: Image,
    result: RegistrationResult,
    *,
    moving_label: Image | None = None,
    figure: bool = False,
) -> dict[str, Any]:
    """Write the warped image and label map, the transform, the summary and optional figures into ``out_dir``."""
    from deepmia.io import write_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    transform = result.transform
    warped = transform.apply(moving, reference=fixed)
    files = {"warped": out / "warped.nii.gz"}
    write_image(warped, files["warped"])
    if transform.is_linear:
        files["transform"] = transform.save(out / "transform.tfm")
    else:
        files["transform"] = transform.save(out / "transform.h5")
        files["displacement"] = transform.save(out / "displacement.nii.gz", reference=fixed)
    if moving_label is not None:
        files["warped_label"] = out / "warped_label.nii.gz"
        write_image(transform.apply(moving_label, reference=fixed), files["warped_label"])
    if figure:
        from deepmia.report.figures import save_registration_figures

        for path in save_registration_figures(fixed, moving, warped, transform, out):
            files[path.stem] = path
    summary = {
        **result.summary(),
        "fixed": fixed.meta.get("source"),
        "moving": moving.meta.get("source"),
        "files": {k: v.name for k, v in files.items()},
    }
    (out / "registration.json").write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    return summary
