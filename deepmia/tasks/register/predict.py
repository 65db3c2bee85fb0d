"""The registration :class:`Predictor`: one object that registers pairs (classical or learned).

``deepmia register``, ``deepmia predict MODEL_DIR`` and batch jobs are thin adapters over it. A result's output
folder (:meth:`RegisterResult.write`): ``warped.nii.gz`` (moving on the fixed grid), ``transform.tfm`` (linear) or
``transform.h5`` (deformable, an ITK composite), ``displacement.nii.gz`` (deformable: the dense field on the fixed
grid, ITK convention), ``warped_label.nii.gz`` (with a moving label map), ``registration.json`` and, on request,
``checkerboard.png``, ``overlay.png``, ``deformation_grid.png``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

from deepmia._validate import look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks._base import Predictor as TaskPredictor
from deepmia.tasks._base import case_id
from deepmia.tasks.register.classical import RegistrationResult, check_pair, register_images
from deepmia.tasks.register.result import RegisterResult

__all__ = ["Predictor", "PREDICT_METHODS"]


def _Field(network: Any) -> Any:
    """A module whose forward is ``network.field`` (the call a learned registration makes), for export."""
    import torch

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, moving: Any, fixed: Any) -> Any:
            return self.network.field(moving, fixed)

    return Field()

PREDICT_METHODS = ("rigid", "affine", "deformable", "learned")
_PAIR_KEYS = ("fixed", "moving", "moving_label", "fixed_mask", "moving_mask")


class Predictor(TaskPredictor):
    """Registers moving images to fixed images with one method and one set of options.

    Args:
        model_dir: Trained model folder (``deepmia train register``): the method is then ``learned``.
        method: ``"rigid"``, ``"affine"``, ``"deformable"`` or ``"learned"`` (default: ``learned`` with a model
            folder, else ``deformable``).
        device: ``cpu`` (default), ``cuda`` or ``auto`` (the learned network's device).
        runtime: ``torch`` (default), ``onnx`` or ``openvino``: where a learned model's network runs.
        precision: Outside torch, ``fp32`` (default), ``fp16`` or ``int8`` (ONNX Runtime), ``bf16`` (OpenVINO).
        **options: Options of :func:`~deepmia.tasks.register.classical.register_images` (metric, deformable,
            levels, iterations, ...); a learned model takes ``metric`` (its divergence check) only.

    Raises:
        InvalidArgumentError: Unknown method, ``"learned"`` without a model folder, a model folder with another method.
    """

    task = "register"

    def __init__(
        self, model_dir: str | PathLike[str] | None = None, *, method: str | None = None, device: str | None = "cpu",
        runtime: str = "torch", precision: str | None = None, **options: Any,
    ) -> None:
        from deepmia.engine.runners import resolve_precision, use_runtime
        from deepmia.engine.runtime import resolve_device

        method = method or ("learned" if model_dir is not None else "deformable")
        self.method = look_up_option(method, PREDICT_METHODS, what="registration method")
        self.method_options = options
        self.model_dir = None if model_dir is None else Path(model_dir)
        self.model = None
        self.device = resolve_device(device)
        if self.method == "learned":
            if model_dir is None:
                raise InvalidArgumentError("--method learned needs a trained model", fix="pass --model MODEL_DIR")
            from deepmia.tasks.register.learned import LearnedRegistration

            self.model = LearnedRegistration.load(model_dir, device=self.device)
        elif model_dir is not None:
            raise InvalidArgumentError(f"--model is only used with --method learned, not {self.method}")
        default = self.model.plan.inference_precision if self.model is not None else "fp32"
        self.runtime, self.precision = resolve_precision(runtime, precision, default, self.device.type)
        if self.runtime != "torch" and self.model is None:
            raise InvalidArgumentError(f"--runtime {self.runtime} runs a learned model's network; {self.method} "
                                       "registration has none", fix="leave out --runtime")
        self.runners = use_runtime(self.onnx_networks, self.model_dir, self.runtime, self.precision)

    def options(self) -> dict[str, Any]:
        """The method and its options (recorded in run.json)."""
        from deepmia.engine.runners import runtime_info

        return {"method": self.method, **self.method_options,
                **runtime_info(self.runtime, self.precision, self.runners)}

    def onnx_networks(self) -> list[Any]:
        """The learned model's network: ``(moving, fixed)`` on the padded fixed grid -> displacement, dynamic axes.

        The trace example and the check are smooth images in [0, 1] like real inputs: traced on zeros, the exported
        displacement differed from torch's by up to 0.7 voxel.
        """
        from deepmia.engine.runners import NetworkSpec

        if self.model is None or self.model_dir is None:
            raise InvalidArgumentError(f"{self.method} registration has no network to export",
                                       fix="export a trained registration model (deepmia train register)")
        import torch

        plan = self.model.plan
        example = torch.zeros((1, 1, *plan.grid_shape))
        gen = torch.Generator().manual_seed(0)  # the check: smooth images in [0, 1], like rescaled intensities
        smooth = [torch.nn.functional.avg_pool3d(torch.rand(example.shape, generator=gen), 5, 1, 2) for _ in "mf"]
        axes = {2 + i: f"s{i}" for i in range(plan.spatial_dims)}
        return [NetworkSpec("fold_0", _Field(self.model.network), tuple(smooth), ("moving", "fixed"),
                            ("displacement",), {"moving": axes, "fixed": axes},
                            self.model_dir / "fold_0" / "model_best.pt", partial(setattr, self.model, "network"),
                            check=tuple(smooth))]

    def register(
        self, fixed: Image, moving: Image, *, fixed_mask: Image | None = None, moving_mask: Image | None = None,
    ) -> RegistrationResult:
        """Register one pair; the result's transform maps fixed-space points to moving-space points."""
        if self.model is not None:
            return self.model.register(
                fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask, **self.method_options
            )
        return register_images(
            fixed, moving, method=self.method, fixed_mask=fixed_mask, moving_mask=moving_mask, **self.method_options
        )

    def predict(self, inputs: tuple[Image, Image] | Mapping[str, Image | None]) -> RegisterResult:
        """Register a pair: ``(fixed, moving)``, or a mapping with ``fixed`` and ``moving``.

        The mapping may also hold ``moving_label`` (warped with the image), ``fixed_mask`` and ``moving_mask``.

        Raises:
            InvalidArgumentError: Not a pair, or unknown keys.
            GeometryError: The images or masks do not fit together (see ``check_pair``).
        """
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - set(_PAIR_KEYS))
            if unknown or inputs.get("fixed") is None or inputs.get("moving") is None:
                raise InvalidArgumentError(f"a registration input needs fixed and moving images (unknown: {unknown})")
            pair = {k: inputs.get(k) for k in _PAIR_KEYS}
        elif isinstance(inputs, (tuple, list)) and len(inputs) == 2:
            pair = dict(zip(_PAIR_KEYS, inputs, strict=False))
        else:
            raise InvalidArgumentError("a registration input is a (fixed, moving) pair")
        fixed, moving = pair["fixed"], pair["moving"]
        check_pair(fixed, moving, moving_label=pair.get("moving_label"), fixed_mask=pair.get("fixed_mask"),
                   moving_mask=pair.get("moving_mask"))
        result = self.register(fixed, moving, fixed_mask=pair.get("fixed_mask"), moving_mask=pair.get("moving_mask"))
        return RegisterResult(result, fixed, moving, pair.get("moving_label"),
                              case=case_id(moving))

    def run(
        self, fixed: Image, moving: Image, out_dir: str | PathLike[str], *, moving_label: Image | None = None,
        fixed_mask: Image | None = None, moving_mask: Image | None = None,
    ) -> dict[str, Any]:
        """Register and write the output folder (see the module docstring); returns ``registration.json``'s content."""
        import json

        result = self.predict({"fixed": fixed, "moving": moving, "moving_label": moving_label,
                               "fixed_mask": fixed_mask, "moving_mask": moving_mask})
        result.write(out_dir, "")
        return json.loads((Path(out_dir) / "registration.json").read_text())
