"""Figures of task results: one function that draws any task's :class:`~deepmia.tasks.Result`.

The batch loop calls it once per result when a figure is asked for (``deepmia predict --figure``), so the tasks
themselves never import the report layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["result_figures"]


def _figure_path(dst: Path, name: str, suffix: str = "") -> Path:
    from deepmia.io import image_stem

    path = dst / "figures" / f"{image_stem(name)}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def result_figures(name: str, result: Any, dst: str | os.PathLike[str]) -> list[Path]:
    """Draw the figures of one result into ``dst/figures/`` (registration: into ``dst/<name>/``).

    Segmentation: the label map over the image at its largest cross-section, with a legend; classification: the
    image with the class and probability (and a saliency map when the result has one); detection: the boxes at or
    above the result's ``min_score``; registration: checkerboard, overlay and deformation grid.

    Returns:
        The paths written (none when the result holds no image to draw on).
    """
    from deepmia.report import figures

    dst = Path(dst)
    if result.task == "register":
        out = dst / name if name else dst
        from deepmia.report.registration import save_registration_figures

        return save_registration_figures(result.fixed, result.moving, result.warped(), result.transform, out)
    if getattr(result, "image", None) is None:
        return []
    if result.task == "segment":
        return [figures.segmentation_figure(result.image, result.labels, _figure_path(dst, name),
                                            label_names=dict(result.label_names))]
    if result.task == "classify":
        title = f"{result.label} (p={float(max(result.probabilities)):.3f})"
        return [figures.classification_figure(result.image, _figure_path(dst, name), title=title,
                                              saliency=result.saliency)]
    if result.task == "detect":
        return [figures.detection_figure(result.image, result.boxes, result.scores, result.labels,
                                         _figure_path(dst, name), class_names=result.class_names,
                                         min_score=result.min_score)]
    return []
