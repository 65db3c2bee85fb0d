"""Metrics for every task: segmentation, classification, detection, registration; bootstrap confidence intervals.

Each family has pure per-case kernels (functions of arrays) and an accumulator (``update``, ``aggregate``,
``reset``) that summarises cases with bootstrap intervals over cases. Distance metrics always take ``spacing``
explicitly. Names load lazily so ``import deepmia.metrics`` stays light (no torch, no sub-module imports).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "bootstrap": ("ConfidenceInterval", "bootstrap_ci", "paired_bootstrap_ci", "bootstrap_indices_ci"),
    "_base": ("Accumulator", "summarise"),
    "segmentation": (
        "ClassScores",
        "SEGMENTATION_METRICS",
        "binary_segmentation_metrics",
        "dice_per_label",
        "segmentation_metrics",
        "surface_distances",
        "SegmentationAccumulator",
    ),
    "classification": (
        "confusion_matrix",
        "accuracy",
        "balanced_accuracy",
        "f1_score",
        "roc_auc",
        "delong_roc_variance",
        "delong_ci",
        "delong_test",
        "auroc_report",
        "sensitivity_specificity",
        "threshold_for_sensitivity",
        "expected_calibration_error",
        "CalibrationBins",
        "ClassificationAccumulator",
    ),
    "detection": (
        "box_iou",
        "coco_evaluate",
        "froc",
        "FROC_FP_RATES",
        "DetectionAccumulator",
    ),
    "registration": (
        "label_overlap",
        "target_registration_error",
        "jacobian_determinant",
        "jacobian_statistics",
        "inverse_consistency_error",
        "RegistrationAccumulator",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'deepmia.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"deepmia.metrics.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
