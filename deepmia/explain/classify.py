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
from deepmia.errors import DeepmiaError, InvalidArgumentError
from deepmia.explain.overlay import write_overlays
from deepmia.explain.saliency import METHODS, TabularBound, saliency_map, target_layer
from deepmia.tasks.classify.predict import Predictor, list_inputs

__all__ = ["explain_path", "explainable_model"]


def explainable_model(predictor: Predictor, tabular: np.ndarray | None = None, *, member: int = 0) -> torch.nn.Module:
    """A member as a one-argument module (a fusion model gets its case's clinical row bound)."""
    model = predictor.models[member]
    if tabular is None:
        return model
    return TabularBound(model, torch.from_numpy(np.asarray(tabular, dtype=np.float32).reshape(1, -1)))


def explain_path(
    model_dir: str | Path, src: str | Path, dst: str | Path, *, methods: Sequence[str] = METHODS,
    clinical: str | Path | None = None,
) -> dict[str, Any]:
    """Write saliency overlays for an image file or a folder of them, plus ``dst/explanations.csv``.

    Raises:
        ReadError / InvalidArgumentError: A single input cannot be read or does not fit the model.
    """
    from deepmia.io import read_image

    methods = [look_up_option(m, METHODS, what="explanation method") for m in methods]
    predictor = Predictor(model_dir)
    src, dst = Path(src), Path(dst)
    single = src.is_file()
    rows, skipped = [], []
    activation = "sigmoid" if predictor.plan.multi_label else "softmax"
    clinical_rows = predictor.read_clinical(clinical)  # read and checked once, before any image
    for path in list_inputs(src):
        try:
            image = read_image(path)
            x = predictor.prepare(image, path=path)
            tab = predictor.clinical_row(clinical_rows, path, table=clinical)
        except DeepmiaError as exc:
            if single:
                raise
            skipped.append((path.name, str(exc)))
            continue
        result = predictor.predict_arrays(x[None], tab)
        prob = result["probabilities"][0]
        cls = int(prob.argmax())
        model = explainable_model(predictor, tab)
        xt = torch.from_numpy(x[None])
        layer = target_layer(model, xt)
        stem = path.name.split(".")[0]
        for method in methods:
            m = saliency_map(model, xt, method=method, class_index=cls, layer=layer, activation=activation)
            files = write_overlays(image, m, dst / f"{stem}_{method}")
            rows.append([path.name, predictor.class_names[cls], f"{prob[cls]:.4f}", method,
                         "" if method == "occlusion" else layer,
                         ";".join(f.name for f in files)])
    if not rows:
        raise InvalidArgumentError(f"nothing could be explained ({len(skipped)} skipped)", path=src)
    with (dst / "explanations.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "probability", "method", "layer", "outputs"])
        w.writerows(rows)
    if skipped:
        with (dst / "skipped.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "reason"])
            w.writerows(skipped)
    return {"explained": len({r[0] for r in rows}), "skipped": skipped, "out": str(dst)}
