"""Key images of a report, drawn with :mod:`deepmia.report.figures` and embedded as PNG data URIs.

Segmentation: each structure at its own largest cross-section, in the three planes for a volume; detection: the
whole image with its boxes, then each detection cropped; classification: the image with its saliency (Grad-CAM)
map; registration: checkerboards of the fixed image and the moving one before and after alignment. Every panel
carries orientation letters and a scale bar where the image's geometry is known (see
:func:`deepmia.report.figures.panel`). Text drawn inside a picture stays English (the figure font has no CJK
glyphs); the report translates the caption under it.
"""

from __future__ import annotations

import base64
import io
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.image import Image

__all__ = ["data_uri", "png_uri", "structure_images", "detection_images", "classification_image",
           "checkerboard_image"]

PLANES = ("axial", "coronal", "sagittal")
_PANEL_PX = 260  # longer side of each panel: sharp at print size without a heavy page


def png_uri(rgb: np.ndarray) -> str:
    """An ``(rows, cols, 3)`` uint8 picture as a ``data:image/png;base64,...`` URI."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb[..., :3])).save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue())


def data_uri(png: bytes) -> str:
    """PNG bytes as a data URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _drawn(draw: Callable[[Path], Path]) -> str:
    """The data URI of a figure that a :mod:`deepmia.report.figures` function writes to a path."""
    with tempfile.TemporaryDirectory() as tmp:
        return data_uri(Path(draw(Path(tmp) / "figure.png")).read_bytes())


def _window(image: Image) -> tuple[float, float]:
    """One intensity window (0.5th-99.5th percentile of the first channel) for every panel of an image."""
    values = np.asarray(image.array[0], np.float32)
    lo, hi = np.percentile(values[np.isfinite(values)], [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(lo), float(hi)


def structure_images(image: Image, labels: Image, names: Mapping[int, str], *,
                     notes: Callable[[Image], list[str]]) -> list[dict[str, str]]:
    """One key image per structure present: its largest cross-section, in three planes for a volume.

    Args:
        image: The segmented image.
        labels: The label map on its grid.
        names: Label value -> structure name.
        notes: Footer lines of a figure (why letters or the scale bar are missing).

    Returns:
        ``[{"title", "uri"}]`` in label order.
    """
    from deepmia.display import overlay_labels, slice_for_display, to_rgb
    from deepmia.report.figures import label_colour, largest_section, montage, panel, plane_geometry

    window = _window(image)
    out = []
    for value, name in sorted(names.items()):
        mask = labels.with_array((labels.array == value).astype(np.uint8), kind="label")
        if not mask.array.any():
            continue
        where = largest_section(mask)
        planes = PLANES if image.spatial_dims == 3 else ("axial",)
        panels = []
        for plane in planes:
            sl, aspect = slice_for_display(image, plane, where.get(plane))
            rgb = overlay_labels(to_rgb(sl, window), slice_for_display(labels, plane, where.get(plane))[0][0])
            col_mm, letters = plane_geometry(image, plane)
            panels.append(panel(rgb, aspect=aspect, col_mm=col_mm, letters=letters, min_size=_PANEL_PX))
        titles = list(planes) if image.spatial_dims == 3 else None
        footer = [f"{name} at its largest cross-section", *notes(image)]
        out.append({"kind": "structure", "title": name, "uri": png_uri(montage(panels, titles=titles, footer=footer,
                                                          swatches=[label_colour(value)]))})
    return out


def detection_images(image: Image, result: Any, *, notes: Callable[[Image], list[str]], limit: int = 8,
                     ) -> list[dict[str, str]]:
    """The image with every kept box, then a crop around each kept detection (the first ``limit``).

    Returns:
        ``[{"title", "uri"}]``: the overview first.
    """
    from deepmia.display import to_rgb
    from deepmia.report.figures import detection_figure, label_colour, panel, plane_geometry

    overview = _drawn(lambda p: detection_figure(image, result.boxes, result.scores, result.labels, p,
                                                 class_names=result.class_names, min_score=result.min_score))
    out = [{"kind": "overview", "title": "", "uri": overview}]
    if image.spatial_dims != 2:
        return out
    window = _window(image)
    col_mm, letters = plane_geometry(image, "axial")
    arr = np.swapaxes(image.array, 1, 2)  # (C, rows = y, cols = x), as boxes count
    for n, i in enumerate(result.kept()[:limit], start=1):
        x0, y0, x1, y1 = (float(v) for v in result.boxes[i][:4])
        pad = 0.25 * max(x1 - x0, y1 - y0, 4.0)
        c0, r0 = int(max(0, np.floor(x0 - pad))), int(max(0, np.floor(y0 - pad)))
        c1, r1 = int(min(arr.shape[2], np.ceil(x1 + pad))), int(min(arr.shape[1], np.ceil(y1 + pad)))
        rgb = to_rgb(arr[:, r0:r1, c0:c1], window).copy()
        colour = np.array(label_colour(int(result.labels[i]) + 1), np.uint8)
        bx0, by0 = int(round(x0)) - c0, int(round(y0)) - r0
        bx1, by1 = min(rgb.shape[1], int(round(x1)) - c0) - 1, min(rgb.shape[0], int(round(y1)) - r0) - 1
        rgb[max(by0, 0), max(bx0, 0):bx1 + 1] = rgb[by1, max(bx0, 0):bx1 + 1] = colour
        rgb[max(by0, 0):by1 + 1, max(bx0, 0)] = rgb[max(by0, 0):by1 + 1, bx1] = colour
        pic = panel(rgb, col_mm=col_mm, letters=letters, min_size=140)
        out.append({"kind": "detection", "title": f"{n}. {result.class_names[int(result.labels[i])]}",
                    "uri": png_uri(pic)})
    return out


def classification_image(image: Image, saliency: Image | None, caption: str, *,
                         notes: Callable[[Image], list[str]]) -> dict[str, str]:
    """The image with its saliency map blended over it (red: the regions that drove the decision).

    A volume with a map shows the three planes through the map's peak.
    """
    from deepmia.report.figures import classification_figure

    if image.spatial_dims != 3 or saliency is None:
        return {"kind": "saliency", "title": caption,
                "uri": _drawn(lambda p: classification_figure(image, p, title=caption, saliency=saliency))}
    from deepmia.display import blend_heatmap, slice_for_display, to_ras_axes, to_rgb
    from deepmia.report.figures import montage, panel, plane_geometry

    ras = to_ras_axes(saliency)[0][0]
    peak = np.unravel_index(int(np.argmax(ras)), ras.shape)  # x (R), y (A), z (S) indices
    window, panels = _window(image), []
    for plane, axis in zip(PLANES, (2, 1, 0), strict=True):
        sl, aspect = slice_for_display(image, plane, int(peak[axis]))
        heat = slice_for_display(saliency, plane, int(peak[axis]))[0][0]
        col_mm, letters = plane_geometry(image, plane)
        panels.append(panel(blend_heatmap(to_rgb(sl, window), heat), aspect=aspect, col_mm=col_mm, letters=letters,
                            min_size=_PANEL_PX))
    footer = [caption, "Heat map: regions that drove the prediction (red: most).", *notes(image)]
    return {"kind": "saliency", "title": caption, "uri": png_uri(montage(panels, titles=list(PLANES), footer=footer))}


def checkerboard_image(fixed: Image, before: Image, after: Image, *, notes: list[str]) -> dict[str, str]:
    """Checkerboards of the fixed image with the moving one before and after registration (central axial slice)."""
    from deepmia.display import slice_for_display, window_to_uint8
    from deepmia.report.figures import montage, panel, plane_geometry
    from deepmia.report.registration import checkerboard

    f, aspect = slice_for_display(fixed, "axial")
    grey_f = window_to_uint8(f[0])
    moving = [slice_for_display(img, "axial")[0][0] for img in (before, after)]
    window = tuple(np.percentile(moving[1], [0.5, 99.5]))
    col_mm, letters = plane_geometry(fixed, "axial")
    panels = [panel(np.repeat(checkerboard(grey_f, window_to_uint8(m, window))[..., None], 3, axis=-1),
                    aspect=aspect, col_mm=col_mm, letters=letters, min_size=300) for m in moving]
    caption = "Checkerboard of fixed and moving tiles: edges line up across tiles when aligned."
    pic = montage(panels, titles=["before", "after"], footer=[caption, *notes])
    return {"kind": "checkerboard", "title": "", "uri": png_uri(pic)}
