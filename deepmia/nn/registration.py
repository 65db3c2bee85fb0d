"""Deformable registration networks: MONAI's VoxelMorph (U-Net backbone, diffeomorphic integration)."""

from __future__ import annotations

from collections.abc import Sequence

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
    return VoxelMorph(
        backbone=backbone, integration_steps=integration_steps, half_res=half_res, spatial_dims=spatial_dims
    )
