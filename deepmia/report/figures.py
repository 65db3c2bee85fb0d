"""Figures of task results: segmentation overlays, detection boxes, classification pictures, all labelled.

Every figure shows its slices in the radiological convention of :mod:`deepmia.display` (patient right on the
viewer's left) with orientation letters at the edges of each panel (from the image's affine; left out with a note
when the file holds no patient orientation, e.g. PNG/JPEG or DICOM without position and orientation), a scale bar
in mm (from the voxel spacing; left out with a note when the spacing is unknown), and a legend or caption strip.

Each function takes keyword-only options and returns the path it wrote (PNG).

Example:
    >>> import numpy as np
    >>> edge_letters(np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]))
    ('R', 'L', 'A', 'P')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.display import LABEL_COLOURS, Plane, overlay_labels, slice_for_display, to_ras_axes, to_rgb
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image

__all__ = [
    "classification_figure", "detection_figure", "image_figure", "segmentation_figure",
    "edge_letters", "geometry_known", "geometry_notes", "label_colour", "largest_section", "montage", "panel",
    "plane_geometry", "save_rgb",
]

RASTER_FORMATS = frozenset({"png", "jpeg", "jpg", "bmp", "gif", "webp", "tiff"})
# Direction (RAS+ world) of increasing column and increasing row of each displayed plane (see deepmia.display).
_PLANE_DIRECTIONS = {
    "axial": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "coronal": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}
_MANY_SLICES = 16  # volumes with more slices than this get coronal and sagittal panels too
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


# ----------------------------------------------------------------------------------------------- geometry
def geometry_known(image: Image) -> tuple[bool, bool]:
    """Whether ``image`` knows its patient orientation and its physical voxel spacing.

    Raster files (PNG, JPEG, ...) hold no patient orientation; a DICOM file without position/orientation holds
    spacing only. The spacing follows the one rule of :func:`deepmia.io.spacing_known`: the readers flag
    ``meta["spacing_unknown"]`` for a raster file without a calibrated spacing (see :mod:`deepmia.io.raster`)
    and for a DICOM ``PixelSpacing`` that is missing or 0.
    """
    from deepmia.io import spacing_known

    meta = image.meta
    raster = str(meta.get("format", "")).lower() in RASTER_FORMATS
    orientation = not raster and not str(meta.get("geometry", "")).startswith("none")
    return orientation, spacing_known(image)


def _letter(direction: np.ndarray) -> str:
    """The patient direction (RAS+ world) a vector points to most: R/L, A/P or S/I."""
    axis = int(np.argmax(np.abs(direction)))
    return ("RAS" if direction[axis] > 0 else "LPI")[axis]


def edge_letters(col_direction: np.ndarray, row_direction: np.ndarray) -> tuple[str, str, str, str]:
    """Letters at the (left, right, top, bottom) edges of a panel whose columns and rows point as given (RAS+)."""
    col, row = np.asarray(col_direction, float), np.asarray(row_direction, float)
    return _letter(-col), _letter(col), _letter(-row), _letter(row)


def _array_letters(image: Image) -> tuple[str, str, str, str]:
    """Letters of a panel in array order (rows = y index, columns = x index), from the affine's columns."""
    return edge_letters(image.affine[:3, 0], image.affine[:3, 1])


def label_colour(value: int) -> tuple[int, int, int]:
    """The overlay colour of label value ``value`` (1, 2, ...), as :func:`deepmia.display.overlay_labels` draws it."""
    c = LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]
    return int(c[0]), int(c[1]), int(c[2])


# ----------------------------------------------------------------------------------------------- drawing
def _font(size: int = 14) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _nice_length(mm: float) -> float:
    """The largest 1-2-5 length not above ``mm``."""
    if mm <= 0:
        return 0.0
    base = 10 ** np.floor(np.log10(mm))
    return float(max(m * base for m in (1, 2, 5) if m * base <= mm))


def panel(rgb: np.ndarray, *, aspect: float = 1.0, col_mm: float | None = None,
          letters: tuple[str, str, str, str] | None = None, min_size: int = 320) -> np.ndarray:
    """An RGB slice upscaled for display, with orientation letters and a scale bar drawn on it.

    Args:
        rgb: ``(rows, cols, 3)`` uint8 picture.
        aspect: Row spacing / column spacing: rows are stretched so the picture keeps its true proportions.
        col_mm: Width of one column in mm; ``None`` draws no scale bar.
        letters: ``(left, right, top, bottom)`` orientation letters; ``None`` draws none.
        min_size: The longer side is upscaled to at least this many pixels.

    Returns:
        The annotated ``(rows', cols', 3)`` uint8 picture.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h, w = rgb.shape[:2]
    scale = max(1.0, min_size / max(h * aspect, w))
    size = (max(1, round(w * scale)), max(1, round(h * aspect * scale)))
    pic = PILImage.fromarray(np.ascontiguousarray(rgb)).resize(size, PILImage.Resampling.NEAREST)
    draw = ImageDraw.Draw(pic)
    font = _font(max(12, size[0] // 24))
    if letters is not None:
        places = [(4, size[1] / 2, "lm"), (size[0] - 4, size[1] / 2, "rm"), (size[0] / 2, 3, "mt"),
                  (size[0] / 2, size[1] - 3, "mb")]
        for letter, (x, y, anchor) in zip(letters, places, strict=True):
            draw.text((x, y), letter, fill=(255, 255, 0), font=font, anchor=anchor, stroke_width=2,
                      stroke_fill=(0, 0, 0))
    if col_mm:
        mm_per_px = col_mm * w / size[0]
        length = _nice_length(size[0] * mm_per_px / 4)
        px = length / mm_per_px
        x1, y = size[0] - 10, size[1] - 14
        draw.rectangle([x1 - px - 1, y - 1, x1 + 1, y + 5], fill=(0, 0, 0))
        draw.rectangle([x1 - px, y, x1, y + 4], fill=(255, 255, 255))
        label = f"{length:g} mm"
        draw.text((x1 - px / 2, y - 3), label, fill=(255, 255, 255), font=font, anchor="mb", stroke_width=2,
                  stroke_fill=(0, 0, 0))
    return np.asarray(pic)


def _text_strip(width: int, lines: Sequence[str], *, swatches: Sequence[tuple[int, int, int] | None] = (),
                size: int = 15) -> np.ndarray:
    """A white strip with one line of text each, a coloured square before a line that has a swatch colour.

    The strip is ``width`` wide, or wider where a line needs it.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    font = _font(size)
    line_h = size + 8
    width = max([width] + [int(font.getlength(t)) + 2 * size + 12 for t in lines])
    strip = PILImage.new("RGB", (width, max(1, line_h * len(lines) + 6)), _BACKGROUND)
    draw = ImageDraw.Draw(strip)
    swatches = list(swatches) + [None] * (len(lines) - len(swatches))
    for i, (text, colour) in enumerate(zip(lines, swatches, strict=True)):
        y, x = 4 + i * line_h, 6
        if colour is not None:
            draw.rectangle([x, y + 2, x + size - 2, y + size], fill=colour, outline=(0, 0, 0))
            x += size + 6
        draw.text((x, y), text, fill=_TEXT, font=font)
    return np.asarray(strip)


def montage(panels: Sequence[np.ndarray], *, titles: Sequence[str] | None = None,
            footer: Sequence[str] = (), swatches: Sequence[tuple[int, int, int] | None] = (),
            gap: int = 6) -> np.ndarray:
    """Panels side by side (tops aligned, titles above), then a footer strip (legend, caption, notes).

    Returns:
        The ``(rows, cols, 3)`` uint8 picture.
    """
    height = max(p.shape[0] for p in panels)
    cols = []
    for i, p in enumerate(panels):
        col = np.full((height, p.shape[1], 3), 255, np.uint8)
        col[: p.shape[0]] = p[..., :3]
        if titles:
            col = np.concatenate([_text_strip(p.shape[1], [titles[i]]), col], axis=0)
        cols += [col, np.full((col.shape[0], gap, 3), 255, np.uint8)]
    row = np.concatenate(cols[:-1], axis=1)
    if footer:
        strip = _text_strip(row.shape[1], footer, swatches=swatches)
        row = np.pad(row, ((0, 0), (0, strip.shape[1] - row.shape[1]), (0, 0)), constant_values=255)
        row = np.concatenate([row, strip], axis=0)
    return row


def save_rgb(rgb: np.ndarray, path: str | PathLike[str]) -> Path:
    """Write an ``(rows, cols, 3)`` uint8 picture as PNG (parent folders created); returns the path."""
    from PIL import Image as PILImage

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(out)
    return out


# ----------------------------------------------------------------------------------------------- slices
def plane_geometry(image: Image, plane: Plane) -> tuple[float | None, tuple[str, str, str, str] | None]:
    """Column width in mm and edge letters of a displayed plane (``None`` where unknown)."""
    orientation, spacing = geometry_known(image)
    if image.spatial_dims == 2:
        return (image.spacing[0] if spacing else None), (_array_letters(image) if orientation else None)
    _, (sx, sy, _sz) = to_ras_axes(image.with_array(image.array[:1]))
    col, row = _PLANE_DIRECTIONS[plane]
    return ((sy if plane == "sagittal" else sx) if spacing else None,
            edge_letters(np.array(col), np.array(row)) if orientation else None)


def geometry_notes(image: Image) -> list[str]:
    """The footer lines that say why a figure has no orientation letters or no scale bar."""
    orientation, spacing = geometry_known(image)
    notes = []
    if not orientation:
        notes.append("Orientation unknown (the file holds no patient orientation): no orientation letters.")
    if not spacing:
        notes.append("Pixel spacing unknown: no scale bar.")
    return notes


def _planes(image: Image) -> tuple[Plane, ...]:
    if image.spatial_dims == 2:
        return ("axial",)
    n_axial = to_ras_axes(image.with_array(image.array[:1]))[0].shape[3]
    return ("axial", "coronal", "sagittal") if n_axial > _MANY_SLICES else ("axial",)


def largest_section(labels: Image) -> dict[str, int | None]:
    """Per plane, the RAS slice index with the most labelled voxels (``None``: the middle, nothing labelled)."""
    if labels.spatial_dims == 2:
        return {"axial": None}
    fg = to_ras_axes(labels)[0][0] > 0
    if not fg.any():
        return {p: None for p in _PLANE_DIRECTIONS}
    counts = {"sagittal": fg.sum(axis=(1, 2)), "coronal": fg.sum(axis=(0, 2)), "axial": fg.sum(axis=(0, 1))}
    return {p: int(np.argmax(c)) for p, c in counts.items()}


def _plane_panels(image: Image, labels: Image | None, window: tuple[float, float] | None,
                  ) -> tuple[list[np.ndarray], list[str]]:
    """Annotated panels (and their titles) of the planes shown for ``image``, labels overlaid when given."""
    index = largest_section(labels) if labels is not None else {p: None for p in _PLANE_DIRECTIONS}
    panels, titles = [], []
    for plane in _planes(image):
        sl, aspect = slice_for_display(image, plane, index[plane])
        rgb = to_rgb(sl, window)
        if labels is not None:
            rgb = overlay_labels(rgb, slice_for_display(labels, plane, index[plane])[0][0])
        col_mm, letters = plane_geometry(image, plane)
        panels.append(panel(rgb, aspect=aspect, col_mm=col_mm, letters=letters))
        titles.append(plane if image.spatial_dims == 3 else "image")
    return panels, titles


def image_figure(image: Image, path: str | PathLike[str], *, window: tuple[float, float] | None = None,
                 title: str | None = None) -> Path:
    """The image's central slices (axial; coronal and sagittal too for volumes of more than 16 slices).

    Args:
        image: A 2D image or a volume.
        path: Output PNG.
        window: Intensity window (low, high); default: the 0.5th-99.5th percentile.
        title: A caption line under the panels.

    Returns:
        ``path``.
    """
    panels, titles = _plane_panels(image, None, window)
    footer = ([title] if title else []) + geometry_notes(image)
    return save_rgb(montage(panels, titles=titles, footer=footer), path)


def segmentation_figure(image: Image, labels: Image, path: str | PathLike[str], *,
                        label_names: Mapping[int, str] | None = None, window: tuple[float, float] | None = None,
                        title: str | None = None) -> Path:
    """The image with its label map overlaid at the largest cross-section of the labels, with a legend.

    Volumes with more than 16 slices show axial, coronal and sagittal panels; others the axial one.

    Args:
        image: The image (2D or 3D).
        labels: A label map on the image's grid.
        path: Output PNG.
        label_names: Name per label value (value 0 is background and not drawn); default: the values.
        window: Intensity window (low, high); default: the 0.5th-99.5th percentile.
        title: A line above the legend (e.g. ``"model"`` or ``"reference"``).

    Returns:
        ``path``.

    Raises:
        InvalidArgumentError: The label map is not on the image's grid.
    """
    if labels.spatial_shape != image.spatial_shape:
        raise InvalidArgumentError(
            f"label map shape {labels.spatial_shape} differs from the image's {image.spatial_shape}",
            path=labels.meta.get("source"), fix="resample the label map onto the image grid first")
    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    panels, titles = _plane_panels(image, labels, window)
    values = [int(v) for v in np.unique(labels.array) if v != 0]
    present = sorted(set(values) | {k for k in names if k != 0})
    legend = [f"{names.get(v, f'label {v}')}" + ("" if v in values else " (not present)") for v in present]
    footer = ([title] if title else []) + (legend or ["no labels"]) + geometry_notes(image)
    swatches = ([None] if title else []) + [label_colour(v) for v in present]
    return save_rgb(montage(panels, titles=titles, footer=footer, swatches=swatches), path)


def detection_figure(image: Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                     path: str | PathLike[str], *, class_names: Sequence[str], min_score: float,
                     window: tuple[float, float] | None = None) -> Path:
    """The image with the boxes scoring at least ``min_score``, labelled by class and score, with a legend.

    The picture is in array order (rows = y, columns = x, as boxes count); a volume shows the axial slice through
    the centre of its best box, with the boxes that cross it.

    Args:
        image: The image the boxes are on (2D, or 3D with ``[x0, y0, z0, x1, y1, z1]`` boxes).
        boxes: ``(N, 4)`` ``[x0, y0, x1, y1]`` (or ``(N, 6)``) in voxel coordinates.
        scores: ``(N,)`` scores.
        labels: ``(N,)`` class indices into ``class_names``.
        path: Output PNG.
        class_names: Class name per index.
        min_score: Boxes below this score are not drawn.
        window: Intensity window; default: percentiles.

    Returns:
        ``path``.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    boxes = np.asarray(boxes, float).reshape(-1, 2 * image.spatial_dims)
    scores, labels = np.asarray(scores, float).reshape(-1), np.asarray(labels, int).reshape(-1)
    keep = scores >= min_score
    arr = image.array
    d = image.spatial_dims
    if d == 3:
        z = int(np.clip(round(boxes[np.argmax(scores), [2, 5]].mean()) if len(boxes) else arr.shape[3] // 2,
                        0, arr.shape[3] - 1))
        keep &= (boxes[:, 2] <= z + 0.5) & (boxes[:, 5] >= z - 0.5) if len(boxes) else keep
        arr = arr[..., z]
    rgb = to_rgb(np.swapaxes(arr, 1, 2), window)
    orientation, spacing = geometry_known(image)
    pic = panel(rgb, aspect=image.spacing[1] / image.spacing[0] if spacing else 1.0,
                col_mm=image.spacing[0] if spacing else None,
                letters=_array_letters(image) if orientation else None, min_size=512)
    zoom_x, zoom_y = pic.shape[1] / rgb.shape[1], pic.shape[0] / rgb.shape[0]
    canvas = PILImage.fromarray(np.ascontiguousarray(pic))
    draw, font = ImageDraw.Draw(canvas), _font(13)
    order = np.argsort(scores)  # best boxes drawn last, on top
    for i in order[keep[order]]:
        colour = label_colour(labels[i] + 1)
        x0, y0, x1, y1 = boxes[i, [0, 1, d, d + 1]] * [zoom_x, zoom_y, zoom_x, zoom_y]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)
        draw.text((x0 + 2, max(y0 - 2, 12)), f"{class_names[labels[i]]} {scores[i]:.2f}", fill=colour, font=font,
                  anchor="lb", stroke_width=2, stroke_fill=(0, 0, 0))
    legend = [f"{name}: {int(np.sum(keep & (labels == k)))} box(es)" for k, name in enumerate(class_names)]
    footer = [f"{int(keep.sum())} of {len(scores)} boxes with score >= {min_score:g}"
              + (f" (axial slice {z})" if d == 3 else ""), *legend, *geometry_notes(image)]
    swatches = [None] + [label_colour(k + 1) for k in range(len(class_names))]
    return save_rgb(montage([np.asarray(canvas)], footer=footer, swatches=swatches), path)


def classification_figure(image: Image, path: str | PathLike[str], *, title: str,
                          saliency: Image | np.ndarray | None = None,
                          window: tuple[float, float] | None = None) -> Path:
    """The image (with a saliency heat map blended over it when given) and the prediction as its caption.

    A volume shows the axial slice through the saliency peak (the middle slice without a map).

    Args:
        image: The classified image.
        path: Output PNG.
        title: The caption, e.g. ``"pneumonia (p = 0.97)"``.
        saliency: A map in [0, 1] on the image's grid (an Image or an array of its spatial shape).
        window: Intensity window; default: percentiles.

    Returns:
        ``path``.

    Raises:
        InvalidArgumentError: The map's shape differs from the image's.
    """
    from deepmia.display import blend_heatmap

    heat = None
    if saliency is not None:
        arr = saliency.array if isinstance(saliency, Image) else np.asarray(saliency, np.float32)
        arr = arr.reshape(arr.shape[-image.spatial_dims:]) if arr.ndim > image.spatial_dims else arr
        if tuple(arr.shape) != tuple(image.spatial_shape):
            raise InvalidArgumentError(f"saliency shape {arr.shape} differs from the image's {image.spatial_shape}",
                                       fix="resize the map onto the image grid (deepmia.explain.map_on_image_grid)")
        heat = image.with_array(np.asarray(arr, np.float32)[None], kind="intensity")
    index = None
    if heat is not None and image.spatial_dims == 3:
        ras = to_ras_axes(heat)[0][0]  # the axes permuted to R, A, S: unravel in that array's own shape
        index = int(np.unravel_index(int(np.argmax(ras)), ras.shape)[2])
    sl, aspect = slice_for_display(image, "axial", index)
    rgb = to_rgb(sl, window)
    if heat is not None:
        rgb = blend_heatmap(rgb, slice_for_display(heat, "axial", index)[0][0])
    col_mm, letters = plane_geometry(image, "axial")
    pic = panel(rgb, aspect=aspect, col_mm=col_mm, letters=letters)
    footer = [title] + (["Heat map: regions that drove the prediction (red: most)."] if heat is not None else [])
    return save_rgb(montage([pic], footer=footer + geometry_notes(image)), path)
