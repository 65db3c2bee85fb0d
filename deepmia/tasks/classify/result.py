"""The classification :class:`ClassifyResult`: calibrated class probabilities, the decision and its uncertainty."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepmia.image import Image
from deepmia.tasks._base import Result

__all__ = ["ClassifyResult"]


@dataclass
class ClassifyResult(Result):
    """The classification of one image.

    Attributes:
        case: The case id (input name without its image suffix).
        class_names: Class names in output order.
        probabilities: Calibrated probabilities ``(K,)`` (temperature-scaled; sigmoid per label if multi-label).
        decision: The class index, or a 0/1 vector for multi-label models.
        label: The decision as text (class name, or names joined by ``;``).
        uncertainty: Spread of the ensemble / TTA / MC-dropout samples.
        low_confidence: Whether the uncertainty is above the flag fitted on validation.
        threshold: The operating threshold and the class it applies to (binary and multi-label models).
        image: The input image (for figures; not written).
        saliency: A saliency map on the image's grid, when an explanation was computed.
        warnings: Notes from checking the input against the model.
    """

    task = "classify"
    case: str
    class_names: list[str]
    probabilities: np.ndarray
    decision: Any
    label: str
    uncertainty: float
    low_confidence: bool
    threshold: dict[str, Any] | None = None
    image: Image | None = field(default=None, repr=False)
    saliency: Image | None = field(default=None, repr=False)
    warnings: list[str] = field(default_factory=list)

    def measurements(self) -> list[dict[str, Any]]:
        """The decision, one calibrated probability per class and the uncertainty."""
        rows = [{"case": self.case, "target": "decision", "quantity": "label", "value": self.label, "unit": ""}]
        rows += [{"case": self.case, "target": c, "quantity": "probability", "value": round(float(p), 6), "unit": ""}
                 for c, p in zip(self.class_names, self.probabilities, strict=True)]
        rows.append({"case": self.case, "target": "decision", "quantity": "uncertainty",
                     "value": round(float(self.uncertainty), 6), "unit": ""})
        rows.append({"case": self.case, "target": "decision", "quantity": "low_confidence",
                     "value": int(self.low_confidence), "unit": ""})
        rows += [{"case": self.case, "target": "input", "quantity": "warning", "value": w, "unit": ""}
                 for w in self.warnings]
        return rows

    def summary(self) -> dict[str, Any]:
        """Case, label, probabilities, uncertainty, flag and threshold."""
        return {"task": self.task, "case": self.case, "label": self.label,
                "probabilities": {c: float(p) for c, p in zip(self.class_names, self.probabilities, strict=True)},
                "uncertainty": float(self.uncertainty), "low_confidence": bool(self.low_confidence),
                "threshold": self.threshold, "warnings": self.warnings}

    def row(self, name: str) -> list[Any]:
        """This result's line of ``predictions.csv``."""
        return [name, self.label, *[f"{p:.6f}" for p in self.probabilities], f"{self.uncertainty:.6f}",
                int(self.low_confidence), "; ".join(self.warnings)]

    def write(self, dst: str | os.PathLike[str], name: str, *, formats: Sequence[str] = ()) -> list[Path]:
        """Nothing per case: the results of all cases go into one ``predictions.csv`` (:meth:`write_table`)."""
        return []

    has_table = True

    def light(self) -> ClassifyResult:
        """This result without the input image (and saliency map)."""
        return replace(self, image=None, saliency=None)

    @classmethod
    def write_table(cls, results: Sequence[tuple[str, Result]], dst: str | os.PathLike[str]) -> list[Path]:
        """Write ``predictions.csv``: one row per case.

        Columns: ``file``, ``label``, ``prob_<class>`` per class, ``uncertainty``, ``low_confidence`` (also set for
        an input unlike the training data) and ``input_warnings`` (why).
        """
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        first = cast(ClassifyResult, results[0][1])
        out = dst / "predictions.csv"
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["file", "label", *[f"prob_{c}" for c in first.class_names], "uncertainty", "low_confidence",
                        "input_warnings"])
            for name, r in results:
                w.writerow(r.row(name))  # type: ignore[attr-defined]
        return [out]
