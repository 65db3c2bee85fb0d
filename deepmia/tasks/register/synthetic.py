"""Synthetic ground truth: random smooth deformations with affine offsets, whose mapping is known exactly.

``fixed = T.apply(scan)`` is the scan seen through a random transform ``T`` (fixed-to-moving); registering
``fixed`` to the original ``scan`` (the moving image) should recover ``T``. Used by the brain benchmark and tests.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deepmia.image import Image
from deepmia.processing.spatial_transform import SpatialTransform

__all__ = ["random_affine", "random_deformation"]


def random_affine(
    image: Image, *, seed: int, rotation_deg: float = 5.0, scale: float = 0.05, translation_mm: float = 5.0
) -> SpatialTransform:
    """A random affine about the image centre.

    Rotations up to ``rotation_deg`` per axis, scales ``1 +- scale``, shears up to ``scale / 2``, translations up
    to ``translation_mm``.
    """
    rng = np.random.default_rng(seed)
    d = image.spatial_dims
    angles = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3 if d == 3 else 1))
    rot = np.eye(d)
    planes = [(0, 1), (0, 2), (1, 2)] if d == 3 else [(0, 1)]
    for a, (i, j) in zip(angles, planes, strict=True):
        r = np.eye(d)
        r[i, i] = r[j, j] = np.cos(a)
        r[i, j], r[j, i] = -np.sin(a), np.sin(a)
        rot = rot @ r
    lin = rot @ (np.diag(1 + rng.uniform(-scale, scale, d)) + np.triu(rng.uniform(-scale / 2, scale / 2, (d, d)), 1))
    centre = image.voxel_to_world([(np.array(image.spatial_shape) - 1) / 2])[0, :d]
    m = np.eye(d + 1)
    m[:d, :d] = lin
    m[:d, d] = centre - lin @ centre + rng.uniform(-translation_mm, translation_mm, d)
    return SpatialTransform.from_matrix(m)


def random_deformation(
    image: Image,
    *,
    seed: int,
    max_displacement_mm: float = 6.0,
    smoothness_mm: float = 16.0,
    rotation_deg: float = 5.0,
    scale: float = 0.05,
    translation_mm: float = 5.0,
) -> SpatialTransform:
    """A random smooth dense deformation followed by a random affine: ``x -> A(x + u(x))``.

    ``u`` is white noise on a control grid of ``smoothness_mm`` spacing, cubic-spline interpolated to the image grid
    and scaled so its largest vector is ``max_displacement_mm``; with these defaults it is free of folding.
    """
    rng = np.random.default_rng(seed + 1_000_003)
    d = image.spatial_dims
    shape = np.array(image.spatial_shape)
    coarse = np.maximum(2, np.ceil(shape * np.array(image.spacing) / smoothness_mm).astype(int) + 1)
    noise = rng.standard_normal((d, *coarse))
    u = np.stack([ndimage.zoom(c, shape / coarse, order=3, mode="grid-constant", grid_mode=True) for c in noise])
    u *= max_displacement_mm / max(float(np.sqrt((u**2).sum(0)).max()), 1e-12)
    dense = SpatialTransform.from_displacement(image.with_array(u.astype(np.float32), kind="intensity"))
    return dense.then(
        random_affine(image, seed=seed, rotation_deg=rotation_deg, scale=scale, translation_mm=translation_mm)
    )
