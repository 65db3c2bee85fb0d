"""The segmentation ``Predictor``: a model directory in, label maps in the input's own geometry out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.engine.inference import sliding_window
from deepmia.engine.runners import NetworkSpec, resolve_precision, runtime_info, use_runtime
from deepmia.engine.runtime import configure_threads, resolve_device
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks._base import Predictor as TaskPredictor
from deepmia.tasks._model import load_fold_models, resolve_folds
from deepmia.tasks.segment.model import build_model
from deepmia.tasks.segment.plan import SegmentPlan, load_plan
from deepmia.tasks.segment.preprocess import apply_normalization, check_pair, to_network_grid
from deepmia.tasks.segment.result import SegmentResult

__all__ = ["Predictor", "keep_largest_component"]


def keep_largest_component(labels: np.ndarray, which: Sequence[int]) -> np.ndarray:
    """Keep only the largest face-connected component of each label in ``which`` (others become background)."""
    from scipy import ndimage

    out = labels.copy()
    for k in which:
        mask = labels == k
        comp, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[mask & (comp != int(sizes.argmax()))] = 0
    return out


class Predictor(TaskPredictor):
    """Predict label maps with a trained model directory (fold ensemble, mirroring TTA, bounded memory).

    Args:
        model_dir: The model directory (``plan.json`` and ``fold_<k>/model_best.pt``).
        folds: Folds to ensemble (default: every trained fold).
        tta: Mirror along the plan's axes and average.
        precision: Override the plan's precision (``fp32`` or ``bf16``).
        postprocess: Apply the plan's keep-largest-component choice.
        overlap: Override the sliding-window overlap.
        probabilities: Also return class probabilities (one float32 channel per class) in each result.
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        runtime: ``torch`` (default), ``onnx`` or ``openvino`` (the ONNX export: ``deepmia export onnx``).

    Example:
        >>> p = Predictor("models/hippocampus")                                   # doctest: +SKIP
        >>> p.predict(read_image("hippocampus_001.nii.gz")).volumes()             # doctest: +SKIP
    """

    task = "segment"
    formats = ("probabilities",)
    file_output = True

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        precision: str | None = None,
        postprocess: bool = True,
        overlap: float | None = None,
        probabilities: bool = False,
        device: str | None = "cpu",
        runtime: str = "torch",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.plan: SegmentPlan = load_plan(self.model_dir / "plan.json")
        self.folds = resolve_folds(self.model_dir, folds, task=self.task)
        configure_threads()
        self.device = resolve_device(device)
        # in eval mode DynUNet returns only the full-resolution output
        self.models = load_fold_models(self.model_dir, self.folds, lambda: build_model(self.plan), device=self.device)
        self.probabilities = probabilities
        self.tta = tta
        planned = self.plan.schedule.precision
        self.runtime, self.precision = resolve_precision(runtime, precision, "bf16" if planned == "auto" else planned,
                                                         self.device.type)
        self.runners = use_runtime(self.onnx_networks, self.model_dir, self.runtime, self.precision)
        self.postprocess = postprocess
        self.overlap = self.plan.inference.overlap if overlap is None else overlap

    def options(self) -> dict[str, Any]:
        """Folds, TTA, precision, post-processing, overlap and probabilities (recorded in run.json)."""
        return {"folds": self.folds, "tta": self.tta, "precision": self.precision, "postprocess": self.postprocess,
                "overlap": self.overlap, "probabilities": self.probabilities,
                **runtime_info(self.runtime, self.precision, self.runners)}

    def onnx_networks(self) -> list[NetworkSpec]:
        """Each fold's network, exported with dynamic batch and spatial axes."""
        axes = {0: "batch", **{2 + i: f"s{i}" for i in range(self.plan.spatial_dims)}}
        example = torch.zeros((2, self.plan.in_channels, *self.plan.patch_size))
        return [NetworkSpec(f"fold_{k}", net, (example,), ("image",), ("logits",), {"image": axes},
                            self.model_dir / f"fold_{k}" / "model_best.pt", partial(self.models.__setitem__, i))
                for i, (k, net) in enumerate(zip(self.folds, self.models, strict=True))]

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        total = None
        for net in self.models:
            p = torch.softmax(net(x).float(), 1)
            total = p if total is None else total + p
        return (total / len(self.models)).cpu()

    def input_warnings(self, image: Image) -> list[str]:
        """Where ``image`` falls outside the training data: size, spacing, CT intensities, modality."""
        from deepmia.tasks._checks import fingerprint_warnings, ranges_of

        fp = self.plan.fingerprint
        norm = self.plan.normalization
        ct = [(n.mean, n.std) for n in norm] if all(n.scheme == "ct" for n in norm) else None
        # a 2D picture of unknown spacing is not flagged: 2D models are trained on pictures whose spacing is
        # unknown too (the fingerprint does not record it); a 3D volume of unknown spacing is refused by check()
        return fingerprint_warnings(image, shape=ranges_of(fp.get("shape")), spacing=ranges_of(fp.get("spacing")),
                                    intensity=ct, modalities=list(self.plan.modalities))

    def check(self, image: Image, *, path: Any = None) -> None:
        """Refuse an image the model cannot read: channels, dimensionality, NaNs; a 3D volume of unknown spacing."""
        if image.num_channels != self.plan.in_channels or image.spatial_dims != self.plan.spatial_dims:
            raise InvalidArgumentError(
                f"image has {image.num_channels} channel(s) and {image.spatial_dims} spatial dims; the model expects "
                f"{self.plan.in_channels} channel(s) ({', '.join(self.plan.channels)}) in {self.plan.spatial_dims}D",
                path=path,
            )
        check_pair(
            image, None, case_id=str(image.meta.get("case_id", path or "input")), labels=self.plan.labels, path=path
        )
        from deepmia.io import spacing_known

        if self.plan.spatial_dims == 3 and not spacing_known(image):
            raise InvalidArgumentError(
                f"the voxel spacing is unknown; this model resamples to {list(self.plan.target_spacing)} mm and "
                "cannot guess the size of a voxel", path=path, fix="give an image whose header states its spacing")

    def predict_array(self, image: Image, *, out: str = "labels") -> np.ndarray:
        """Network-grid prediction of ``image`` (after resampling and normalisation)."""
        grid = to_network_grid(image, self.plan)
        arr = apply_normalization(grid.array, self.plan)
        mirror = self.plan.inference.mirror_axes if self.tta else []
        return sliding_window(
            self._scores,
            arr,
            window=self.plan.patch_size,
            num_classes=self.plan.num_classes,
            overlap=self.overlap,
            batch_size=self.plan.inference.batch_size,
            mirror_axes=mirror,
            precision=self.precision if self.runtime == "torch" else "fp32",
            out=out,
            device_type=self.device.type,
        ), grid

    def predict(self, image: Image, *, path: Any = None) -> SegmentResult:
        """Segment ``image``: the label map on its own grid (shape and affine identical), probabilities if asked.

        With ``probabilities``, one sliding-window pass gives both; the probabilities are the ensemble's (and
        TTA's) softmax before post-processing, stored at float16 precision in the window, and the labels are
        their argmax (they can differ from the float32 argmax where two classes tie within that precision); the
        full ``(classes, *spatial)`` float32 map is then held in memory, unlike the per-slab argmax.

        Raises:
            InvalidArgumentError: The image does not fit the model (channels, dimensions, NaNs, unknown spacing).
        """
        self.check(image, path=path)
        resampled = not np.allclose(image.spacing, self.plan.target_spacing, rtol=1e-3, atol=1e-4)
        probs = None
        probabilities = self.probabilities
        if not resampled and not probabilities:
            labels, _ = self.predict_array(image)
        else:
            probs, grid = self.predict_array(image, out="probabilities")
            probs = probs.astype(np.float32, copy=False)
            if resampled:
                from deepmia.processing.spatial import resize

                probs = resize(grid.with_array(probs), shape=tuple(image.spatial_shape)).array
            labels = probs.argmax(0).astype(np.uint8)
        if self.postprocess and self.plan.inference.largest_component:
            labels = keep_largest_component(labels, self.plan.inference.largest_component)
        label_image = Image(labels[None], image.affine, kind="label", meta=dict(image.meta))
        keep = probabilities and probs is not None  # (a resampled prediction computes them without being asked)
        prob_image = Image(probs, image.affine, kind="intensity", meta=dict(image.meta)) if keep else None
        names = {int(k): v for k, v in self.plan.labels.items() if int(k) != 0}
        return SegmentResult(label_image, names, prob_image, image=image, warnings=self.input_warnings(image))
