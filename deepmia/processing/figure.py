"""Before/after montages of representative slices (matplotlib, Agg backend), for ``--figure`` options.

Rows are images (e.g. input and output), columns are slices: for volumes, axial slices at 25, 50 and 75% of the
foreground's extent along the slice axis plus the central coronal and sagittal slices; 2D images show once.
Slices come from :mod:`deepmia.display` (radiological convention, planes named from the affine), with their true
aspect ratio; intensities use the 1st-99th percentile window of each image and
label images a categorical colour map.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np

from deepmia.display import Plane, slice_for_display, to_ras_axes
from deepmia.image import Image

__all__ = ["save_montage", "representative_slices"]


def representative_slices(image: Image) -> list[tuple[str, Plane, int | None]]:
    """``(title, plane, index)`` of the slices shown for ``image``.

    Indices count along RAS axes (see :func:`deepmia.display.to_ras_axes`), so planes are named correctly
    whatever the voxel orientation.
    """
    if image.spatial_dims == 2:
        return [("image", "axial", None)]
    a = to_ras_axes(image)[0][0]
    fg = a != 0 if image.kind == "label" else a > np.percentile(a, 50)
    if not fg.any():
        fg = np.ones_like(fg)
    idx = np.nonzero(fg)
    lo, hi = int(idx[2].min()), int(idx[2].max())
    centre = [int(round(float(np.mean(i)))) for i in idx]
    out: list[tuple[str, Plane, int | None]] = [
        (f"axial {q}%", "axial", int(round(lo + (hi - lo) * q / 100))) for q in (25, 50, 75)
    ]
    out.append(("coronal", "coronal", centre[1]))
    out.append(("sagittal", "sagittal", centre[0]))
    return out


_NORMAL_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def save_montage(
    images: Sequence[tuple[str, Image]],
    path: str | PathLike[str],
    *,
    slices_from: Image | None = None,
) -> None:
    """Write a montage: one row per ``(title, image)``, the same representative slices in every row.

    Args:
        images: Rows to show; images of different grids are sliced at the same relative positions.
        path: Output file (PNG, PDF or SVG by suffix).
        slices_from: Image whose foreground chooses the slices (default: the first).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ref = slices_from or images[0][1]
    plan = representative_slices(ref)
    fig, axes = plt.subplots(
        len(images), len(plan), figsize=(2.6 * len(plan), 2.6 * len(images)), dpi=110, squeeze=False
    )
    ref_shape = to_ras_axes(ref)[0].shape[1:] if ref.spatial_dims == 3 else None
    for r, (title, img) in enumerate(images):
        arr = img.array[0]
        shape = to_ras_axes(img)[0].shape[1:] if img.spatial_dims == 3 else None
        if img.kind == "label":
            vmin, vmax, cmap = 0, max(1, int(arr.max())), "tab20"
        else:
            vmin, vmax = (float(v) for v in np.percentile(arr, [1, 99]))
            cmap = "gray"
        for c, (name, plane_name, index) in enumerate(plan):
            if shape is not None and ref_shape is not None and index is not None:
                axis = _NORMAL_AXIS[plane_name]
                index = int(round(index * (shape[axis] - 1) / max(1, ref_shape[axis] - 1)))
            plane, aspect = slice_for_display(img, plane_name, index)
            plane = plane[0]
            ax = axes[r, c]
            if img.kind == "label":
                plane = np.ma.masked_equal(plane, 0)
                ax.set_facecolor("black")
            ax.imshow(plane, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
