"""Registration networks: MONAI's VoxelMorph, and an affine head before it (one forward pass, whole alignment)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia._warnings import library_warnings_ignored
from deepmia.nn import networks


@networks.register("voxelmorph")
def voxelmorph(
    *,
    spatial_dims: int,
    in_channels: int = 2,
    channels: Sequence[int] = (16, 32, 32, 32, 32, 32),
    final_channels: Sequence[int] = (16, 16),
    integration_steps: int = 7,
    half_res: bool = False,
):
    """MONAI ``VoxelMorph``: ``forward(moving, fixed) -> (warped moving, displacement field in voxels)``.

    The U-Net (``VoxelMorphUNet``) reads the concatenated pair; with ``integration_steps > 0`` its output is a
    stationary velocity field integrated by scaling and squaring (diffeomorphic), else the displacement itself.
    The field's channel ``i`` is the displacement along array axis ``i``, in voxels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Channels of moving and fixed together (2 for single-channel images).
        channels: U-Net widths, in pairs (MONAI: each pair is one resolution level).
        final_channels: Widths of the convolution block after the U-Net.
        integration_steps: Scaling-and-squaring steps (0: no integration, not diffeomorphic).
        half_res: Predict the field at half resolution and upsample it (faster, smoother).
    """
    from monai.networks.nets import VoxelMorph, VoxelMorphUNet

    backbone = VoxelMorphUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        unet_out_channels=int(channels[-1]),
        channels=tuple(int(c) for c in channels),
        final_conv_channels=tuple(int(c) for c in final_channels),
    )
    with library_warnings_ignored():  # MONAI's Warp says it uses torch's grid_sample: our choice, not news
        return VoxelMorph(
            backbone=backbone, integration_steps=integration_steps, half_res=half_res, spatial_dims=spatial_dims
        )


def voxel_grid(
    shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Voxel indices ``(D, *shape)`` along the array axes (cached: never modify the result in place).

    While ``torch.export`` traces the network (ONNX export) the grid is computed, not cached: its sizes may be
    symbolic and its tensor is a tracing placeholder.
    """
    if not torch.compiler.is_compiling() and all(isinstance(n, int) for n in shape):
        return _cached_grid(tuple(shape), dtype, device)
    return torch.stack(torch.meshgrid(*[torch.arange(n, dtype=dtype, device=device) for n in shape], indexing="ij"))


@functools.lru_cache(maxsize=8)
def _cached_grid(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    axes = [torch.arange(int(n), dtype=dtype, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def map_points(matrix: Any, points: torch.Tensor) -> torch.Tensor:
    """Voxel maps applied to points ``(B or 1, D, *shape)``.

    ``matrix``: homogeneous ``(D + 1, D + 1)`` or ``(B, D + 1, D + 1)``, or its top rows ``(B, D, D + 1)``; a
    tensor keeps its autograd graph. Computed in the points' precision, outside autocast.
    """
    d = points.shape[1]
    if isinstance(matrix, np.ndarray) and not matrix.flags.writeable:
        matrix = matrix.copy()  # torch warns on read-only arrays (e.g. an affine of a memory-mapped image)
    m = torch.as_tensor(matrix, dtype=points.dtype, device=points.device)
    m = m[None] if m.ndim == 2 else m
    flat = points.reshape(points.shape[0], d, -1).expand(m.shape[0], d, -1)
    with torch.autocast(points.device.type, enabled=False):
        return torch.baddbmm(m[:, :d, d:], m[:, :d, :d], flat).reshape(m.shape[0], d, *points.shape[2:])


class AffineVoxelMorph(torch.nn.Module):
    """Affine then diffeomorphic deformable registration in one forward pass (see :func:`affine_voxelmorph`)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        final_channels: Sequence[int],
        affine_channels: Sequence[int],
        affine_pool: int,
        integration_steps: int,
    ) -> None:
        from monai.networks.blocks import DVF2DDF, Convolution, Warp
        from monai.networks.nets import VoxelMorphUNet

        super().__init__()
        d = self.dims = spatial_dims
        act = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})
        self.down = torch.nn.AvgPool3d(2) if d == 3 else torch.nn.AvgPool2d(2)
        layers, cin = [], 2
        for c in affine_channels:
            layers.append(Convolution(d, cin, int(c), strides=2, kernel_size=3, act=act, norm=None))
            cin = int(c)
        self.affine_encoder = torch.nn.Sequential(*layers)
        adaptive = torch.nn.AdaptiveAvgPool3d if d == 3 else torch.nn.AdaptiveAvgPool2d
        self.affine_pool = adaptive(affine_pool)
        self.affine_fc = torch.nn.Linear(cin * affine_pool**d, d * (d + 1))
        torch.nn.init.zeros_(self.affine_fc.weight)  # starts as the identity
        torch.nn.init.zeros_(self.affine_fc.bias)
        self.unet = VoxelMorphUNet(
            spatial_dims=d,
            in_channels=2,
            unet_out_channels=int(channels[-1]),
            channels=tuple(int(c) for c in channels),
            final_conv_channels=tuple(int(c) for c in final_channels),
        )
        out = self.unet.net[-1].final_conv_out.conv
        torch.nn.init.normal_(out.weight, std=1e-5)  # starts as a near-zero field
        torch.nn.init.zeros_(out.bias)
        with library_warnings_ignored():  # MONAI's Warp says it uses torch's grid_sample: our choice, not news
            self.integrate = DVF2DDF(num_steps=integration_steps) if integration_steps > 0 else None
            self.warp = Warp(mode="bilinear", padding_mode="border")

    def _affine(self, pair: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Voxel-space affines ``(B, D, D + 1)`` on a grid of ``shape`` from the half-resolution pair (float32)."""
        d = self.dims
        # float32: the head's maps shrink to a few voxels, where oneDNN's bf16 backward pass is unreliable
        with torch.autocast(pair.device.type, enabled=False):
            raw = self.affine_fc(self.affine_pool(self.affine_encoder(pair.float())).flatten(1))
            lin = torch.eye(d, device=raw.device) + 0.1 * raw[:, : d * d].reshape(-1, d, d)
            shift = 4.0 * raw[:, d * d :]
            centre = torch.tensor([(n - 1) / 2 for n in shape], device=raw.device)
            offset = centre + shift - torch.einsum("bij,j->bi", lin, centre)  # A(x) = c + L (x - c) + t
            return torch.cat([lin, offset[:, :, None]], 2)

    def affine(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """Voxel-space affines ``(B, D, D + 1)`` mapping fixed voxels to moving voxels (float32)."""
        return self._affine(self.down(torch.cat([moving, fixed], 1)), tuple(fixed.shape[2:]))

    def field(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The displacement (voxels along the array axes, float32) of the map ``x -> A(x + u(x))``."""
        shape = tuple(fixed.shape[2:])
        pair = self.down(torch.cat([moving, fixed], 1))
        matrix = self._affine(pair, shape)
        with torch.autocast(pair.device.type, enabled=False):
            # the same affine on the half-resolution grid, whose voxel y sits at 2y + 1/2 of the full grid
            half = matrix.clone()
            half[:, :, -1] = (matrix[:, :, -1] + 0.5 * matrix[:, :, :-1].sum(2) - 0.5) / 2
            grid = voxel_grid(tuple(pair.shape[2:]), half.dtype, half.device)[None]
            moved = self.warp(pair[:, :1].float(), map_points(half, grid) - grid)
        velocity = self.unet(torch.cat([moved.to(pair.dtype), pair[:, 1:]], 1))
        with torch.autocast(pair.device.type, enabled=False):
            u = velocity.float()
            if self.integrate is not None:
                u = self.integrate(u)
            mode = "trilinear" if self.dims == 3 else "bilinear"
            grid = voxel_grid(shape, u.dtype, u.device)[None]
            u = 2.0 * F.interpolate(u, size=shape, mode=mode, align_corners=False)
            return map_points(matrix, grid + u) - grid

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(warped moving, displacement)``: see :meth:`field`."""
        ddf = self.field(moving, fixed)
        with torch.autocast(moving.device.type, enabled=False):
            return self.warp(moving.float(), ddf), ddf


@networks.register("affine_voxelmorph")
def affine_voxelmorph(
    *,
    spatial_dims: int,
    channels: Sequence[int] = (16, 32, 32, 32, 32, 32),
    final_channels: Sequence[int] = (16, 16),
    affine_channels: Sequence[int] = (8, 16, 32, 32),
    affine_pool: int = 3,
    integration_steps: int = 5,
) -> AffineVoxelMorph:
    """Affine then diffeomorphic deformable registration in one forward pass (affine head + VoxelMorph U-Net).

    ``forward(moving, fixed) -> (warped moving, displacement in voxels)`` like :func:`voxelmorph`, for a pair
    on one grid whose sides are multiples of ``2 ** (len(channels) // 2 + 1)``. An affine head (strided
    convolutions on the half-resolution pair, adaptive pooling to ``affine_pool`` cells per axis, a linear layer
    initialised to the identity; GlobalNet-style, but independent of the grid size) predicts ``A``; the moving
    image warped by ``A`` and the fixed one go, at half resolution, through MONAI's ``VoxelMorphUNet``, whose
    velocity field is integrated by scaling and squaring and upsampled to ``u``. The whole map is
    ``x -> A(x + u(x))``; the affine head, the affine and the field's composition run in float32 under autocast.

    Args:
        spatial_dims: 2 or 3.
        channels: U-Net widths, in pairs (one pair per resolution level).
        final_channels: Widths of the convolution block after the U-Net.
        affine_channels: Widths of the affine head's strided convolutions.
        affine_pool: Cells per axis of the pooled features the affine layer reads.
        integration_steps: Scaling-and-squaring steps of the velocity field (0: a plain displacement).
    """
    return AffineVoxelMorph(spatial_dims, channels, final_channels, affine_channels, affine_pool, integration_steps)
