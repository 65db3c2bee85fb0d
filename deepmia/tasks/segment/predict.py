"""The segmentation ``Predictor``: a model directory in, label maps in the input's own geometry out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from deepmia.engine.inference import sliding_window
from deepmia.engine.runtime import configure_threads
from deepmia.errors import DeepmiaError, InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks.segment.plan import SegmentPlan, load_plan
from deepmia.tasks.segment.preprocess import check_pair, normalize, to_network_grid

__all__ = ["Predictor", "keep_largest_component", "available_folds"]


def available_folds(model_dir: Path) -> list[int]:
    """Folds with trained weights in a model directory."""
    return sorted(int(p.parent.name.split("_")[1]) for p in model_dir.glob("fold_*/model_best.pt"))


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


_FLOAT_FORMATS = ("tiff", "nifti", "nrrd", "metaimage", "numpy")


def _float_name(src: Path, image: Image) -> str:
    """File name for a float map of ``src``: its own name if its format holds floats, else TIFF (2D) / NIfTI."""
    from deepmia.io import format_of, image_stem

    if format_of(src) in _FLOAT_FORMATS:
        return src.name
    return image_stem(src) + (".tif" if image.spatial_dims == 2 else ".nii.gz")


class Predictor:
    """Predict label maps with a trained model directory (fold ensemble, mirroring TTA, bounded memory).

    Args:
        model_dir: The model directory (``plan.json`` and ``fold_<k>/model_best.pt``).
        folds: Folds to ensemble (default: every trained fold).
        tta: Mirror along the plan's axes and average.
        precision: Override the plan's precision (``fp32`` or ``bf16``).
        postprocess: Apply the plan's keep-largest-component choice.
        overlap: Override the sliding-window overlap.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        folds: Sequence[int] | None = None,
        tta: bool = True,
        precision: str | None = None,
        postprocess: bool = True,
        overlap: float | None = None,
    ) -> None:
        from deepmia.tasks.segment.train import build_model

        self.model_dir = Path(model_dir)
        self.plan: SegmentPlan = load_plan(self.model_dir / "plan.json")
        found = available_folds(self.model_dir)
        self.folds = list(folds) if folds is not None else found
        missing = sorted(set(self.folds) - set(found))
        if not self.folds or missing:
            raise InvalidArgumentError(
                f"no trained weights for fold(s) {missing or 'any'} (found {found})",
                path=self.model_dir,
                fix="train them with `deepmia train segment`",
            )
        configure_threads()
        self.models = []
        for k in self.folds:
            net = build_model(self.plan)  # in eval mode DynUNet returns only the full-resolution output
            state = torch.load(self.model_dir / f"fold_{k}" / "model_best.pt", map_location="cpu", weights_only=True)
            net.load_state_dict({n: v.float() for n, v in state.items()})
            net.eval()
            self.models.append(net)
        self.tta = tta
        planned = self.plan.schedule.precision
        self.precision = precision or ("bf16" if planned == "auto" else planned)
        self.postprocess = postprocess
        self.overlap = self.plan.inference.overlap if overlap is None else overlap

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for net in self.models:
            p = torch.softmax(net(x).float(), 1)
            total = p if total is None else total + p
        return total / len(self.models)

    def check(self, image: Image, *, path: Any = None) -> None:
        """Refuse an image the model cannot read: channels, dimensionality, NaNs."""
        if image.num_channels != self.plan.in_channels or image.spatial_dims != self.plan.spatial_dims:
            raise InvalidArgumentError(
                f"image has {image.num_channels} channel(s) and {image.spatial_dims} spatial dims; the model expects "
                f"{self.plan.in_channels} channel(s) ({', '.join(self.plan.channels)}) in {self.plan.spatial_dims}D",
                path=path,
            )
        check_pair(
            image, None, case_id=str(image.meta.get("case_id", path or "input")), labels=self.plan.labels, path=path
        )

    def predict_array(self, image: Image, *, out: str = "labels") -> np.ndarray:
        """Network-grid prediction of ``image`` (after resampling and normalisation)."""
        grid = to_network_grid(image, self.plan)
        arr = normalize(grid.array, self.plan)
        mirror = self.plan.inference.mirror_axes if self.tta else []
        return sliding_window(
            self._scores,
            arr,
            window=self.plan.patch_size,
            num_classes=self.plan.num_classes,
            overlap=self.overlap,
            batch_size=self.plan.inference.batch_size,
            mirror_axes=mirror,
            precision=self.precision,
            out=out,
        ), grid

    def predict(self, image: Image, *, path: Any = None) -> Image:
        """Label map of ``image`` on the image's own grid (shape and affine identical), kind ``label``."""
        return self._predict(image, path=path, probabilities=False)[0]

    def predict_with_probabilities(self, image: Image, *, path: Any = None) -> tuple[Image, Image]:
        """Label map and class probabilities (float32, one channel per class) on the image's own grid.

        One sliding-window pass gives both; the probabilities are the ensemble's (and TTA's) softmax before
        post-processing, so a keep-largest-component choice changes the label map only. The sliding window
        stores probabilities at float16 precision, and the labels are their argmax: they can differ from
        :meth:`predict`'s (argmax in float32) where two classes tie within that precision. Memory: the full
        ``(classes, *spatial)`` float32 map is held, unlike :meth:`predict`'s per-slab argmax.
        """
        labels, probs = self._predict(image, path=path, probabilities=True)
        return labels, cast(Image, probs)

    def _predict(self, image: Image, *, path: Any, probabilities: bool) -> tuple[Image, Image | None]:
        self.check(image, path=path)
        resampled = not np.allclose(image.spacing, self.plan.target_spacing, rtol=1e-3, atol=1e-4)
        probs = None
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
        prob_image = None if probs is None else Image(probs, image.affine, kind="intensity", meta=dict(image.meta))
        return label_image, prob_image

    def predict_paths(
        self,
        sources: Sequence[Path],
        out_dir: Path,
        *,
        probabilities_dir: Path | None = None,
        on_done: Callable[[Path, DeepmiaError | None], None] | None = None,
    ) -> list[tuple[Path, str]]:
        """Predict each file into ``out_dir`` under the same name and format; a bad file is reported and skipped.

        Args:
            sources: Input image files.
            out_dir: Folder for the label maps.
            probabilities_dir: Also write each input's class probabilities here (float32, one channel per
                class): under the input's name when its format holds floats (TIFF, NIfTI, NRRD, MHA, NumPy),
                else as ``<stem>.tif`` (2D) or ``<stem>.nii.gz``.
            on_done: Called as ``on_done(path, error_or_None)`` after each file.

        Returns:
            ``(path, problem)`` for every file that failed.
        """
        from deepmia.io import read_image, write_image

        out_dir.mkdir(parents=True, exist_ok=True)
        failed = []
        for src in sources:
            try:
                image = read_image(src)
                if probabilities_dir is None:
                    write_image(self.predict(image, path=src), out_dir / src.name)
                else:
                    labels, probs = self.predict_with_probabilities(image, path=src)
                    write_image(labels, out_dir / src.name)
                    write_image(probs, probabilities_dir / _float_name(src, image))
                err = None
            except DeepmiaError as exc:
                failed.append((src, str(exc)))
                err = exc
            if on_done:
                on_done(src, err)
        return failed
