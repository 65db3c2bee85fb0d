"""``deepmia explain``: Grad-CAM, Grad-CAM++ and occlusion maps of a classification model's decision.

Maps explain the first ensemble member's logit of the predicted class (for multi-label models, the most probable
label), computed on the network input and drawn over the original image.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia._validate import look_up_option
from deepmia.explain.overlay import write_overlays
from deepmia.explain.saliency import METHODS, TabularBound, saliency_map, target_layer
from deepmia.io import image_stem
from deepmia.tasks.classify.predict import Predictor

__all__ = ["explain_path", "explainable_model"]


def explainable_model(predictor: Predictor, tabular: np.ndarray | None = None, *, member: int = 0) -> torch.nn.Module:
    """A member as a one-argument module (a fusion model gets its case's clinical row bound)."""
    model = predictor.models[member]
    if tabular is None:
        return model
    return TabularBound(model, torch.from_numpy(np.asarray(tabular, dtype=np.float32).reshape(1, -1)))


class _Explainer:
    """A writer for the batch loop: saliency overlays of each classified input, and their table."""

    def __init__(self, predictor: Predictor, methods: Sequence[str]) -> None:
        self.predictor, self.methods = predictor, list(methods)
        self.activation = "sigmoid" if predictor.plan.multi_label else "softmax"
        self.rows: list[list[str]] = []

    def __call__(self, name: str, result: Any, dst: Path) -> list[Path]:
        image, predictor = result.image, self.predictor
        x = predictor.prepare(image)
        tab = predictor.clinical_features(image)
        cls = int(np.argmax(result.probabilities))
        model = explainable_model(predictor, tab)
        xt = torch.from_numpy(x[None])
        layer = target_layer(model, xt)
        stem = image_stem(name)  # not split("."): DICOM files are named by UIDs full of dots
        written: list[Path] = []
        for method in self.methods:
            m = saliency_map(model, xt, method=method, class_index=cls, layer=layer, activation=self.activation)
            files = write_overlays(image, m, dst / f"{stem}_{method}")
            written += files
            self.rows.append([name, predictor.class_names[cls], f"{result.probabilities[cls]:.4f}", method,
                              "" if method == "occlusion" else layer, ";".join(f.name for f in files)])
        return written

    def write_table(self, dst: Path) -> Path:
        path = dst / "explanations.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "class", "probability", "method", "layer", "outputs"])
            w.writerows(self.rows)
        return path


def explain_path(
    model_dir: str | Path, src: str | Path, dst: str | Path, *, methods: Sequence[str] = METHODS,
    clinical: str | Path | None = None,
) -> dict[str, Any]:
    """Write saliency overlays for an image file, a DICOM series or a folder of inputs, plus ``explanations.csv``.

    Runs through the one batch loop (:func:`deepmia.engine.batch.run_batch`), so it also writes the predictions,
    ``skipped.csv``, ``measurements.csv`` and ``run.json``.

    Raises:
        ReadError / InvalidArgumentError: A single input cannot be read or does not fit the model.
    """
    from deepmia.engine.batch import run_batch

    methods = [look_up_option(m, METHODS, what="explanation method") for m in methods]
    predictor = Predictor(model_dir, clinical=clinical)
    explainer = _Explainer(predictor, methods)
    dst = Path(dst)
    report = run_batch(predictor, src, dst, writers=[explainer], options={"explain": methods})
    explainer.write_table(dst)
    return {"explained": len(report.predicted), "skipped": report.skipped, "out": str(dst)}
