"""Saliency maps drawn over their images: PNG for 2D, NIfTI plus one PNG per plane for 3D.

Maps computed at the network's input size are resized back onto the image's own grid, so the NIfTI map shares
the image's affine and opens as an overlay in any viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.display import PLANES, blend_heatmap, save_png, slice_for_display, to_rgb
from deepmia.image import Image

__all__ = ["map_on_image_grid", "blend_heatmap", "write_overlays"]


def map_on_image_grid(saliency: np.ndarray, image: Image) -> Image:
    """A map ``(*input_size)`` resized (linear) onto ``image``'s grid, as a one-channel image with its affine."""
    m = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    if tuple(m.shape[2:]) != tuple(image.spatial_shape):
        mode = "bilinear" if image.spatial_dims == 2 else "trilinear"
        m = F.interpolate(m, size=image.spatial_shape, mode=mode, align_corners=False)
    return Image(m[0].numpy().clip(0, 1), image.affine, meta={"description": "saliency"})


def write_overlays(
    image: Image, saliency: np.ndarray, out_stem: Path, *, title_window: tuple[float, float] | None = None,
) -> list[Path]:
    """Write the overlay(s) of one map: ``STEM.png`` (2D), or ``STEM.nii.gz`` and ``STEM_<plane>.png`` (3D).

    For volumes each plane's slice passes through the map's maximum.

    Returns:
        The files written.
    """
    from deepmia.io import write_image

    out_stem.parent.mkdir(parents=True, exist_ok=True)
    heat = map_on_image_grid(saliency, image)
    if image.spatial_dims == 2:
        sl, aspect = slice_for_display(image)
        hm, _ = slice_for_display(heat)
        path = out_stem.with_name(out_stem.name + ".png")
        save_png(blend_heatmap(to_rgb(sl, title_window), hm[0]), path, aspect=aspect)
        return [path]
    nifti = out_stem.with_name(out_stem.name + ".nii.gz")
    write_image(heat, nifti)
    written = [nifti]
    # Slice indices through the peak, in the RAS-ordered axes slice_for_display counts along.
    from deepmia.display import to_ras_axes

    ras, _ = to_ras_axes(heat)
    peak = np.unravel_index(int(np.argmax(ras[0])), ras.shape[1:])
    for plane in PLANES:
        axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
        sl, aspect = slice_for_display(image, plane, int(peak[axis]))
        hm, _ = slice_for_display(heat, plane, int(peak[axis]))
        path = out_stem.with_name(f"{out_stem.name}_{plane}.png")
        save_png(blend_heatmap(to_rgb(sl, title_window), hm[0]), path, aspect=aspect)
        written.append(path)
    return written
