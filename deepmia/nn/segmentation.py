"""Segmentation networks and losses: MONAI's DynUNet (the nnU-Net topology) sized by the plan; Dice + CE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deepmia.nn import losses, networks


@networks.register("dynunet")
def dynunet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    filters: Sequence[int],
    strides: Sequence[int | Sequence[int]],
    kernels: Sequence[int | Sequence[int]],
    deep_supervision: bool = False,
    deep_supervision_heads: int = 2,
    norm: str = "instance",
    dropout: float | None = None,
):
    """MONAI ``DynUNet``: one stage per entry of ``filters``; ``strides[0]`` is the stem (usually 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Classes, background included.
        filters: Feature maps per stage.
        strides: Downsampling per stage (an int or one per axis).
        kernels: Convolution kernel per stage (an int or one per axis).
        deep_supervision: Also return lower-resolution outputs while training.
        deep_supervision_heads: How many extra outputs with deep supervision.
        norm: Normalisation layer name (``instance``, ``batch``, ...).
        dropout: Dropout probability, or None.
    """
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims,
        in_channels,
        out_channels,
        list(kernels),
        list(strides),
        list(strides[1:]),
        filters=list(filters),
        norm_name=norm,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supervision_heads,
        dropout=dropout,
        res_block=False,
    )


class DeepSupervisionLoss(torch.nn.Module):
    """Apply a loss to every output of a deep-supervised network, targets downsampled by nearest neighbour.

    Output ``i`` gets weight ``0.5**i`` (the lowest resolution last), weights normalised to sum to 1, as in nnU-Net.

    Args:
        loss: The loss applied at each scale, ``loss(logits, target)``.
    """

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The loss of a single output, or the 0.5**i-weighted mean over the deep-supervision outputs."""
        if isinstance(outputs, torch.Tensor) and outputs.dim() == target.dim():
            return self.loss(outputs, target)
        heads = list(torch.unbind(outputs, dim=1)) if isinstance(outputs, torch.Tensor) else list(outputs)
        weights = [0.5**i for i in range(len(heads))]
        total = sum(weights)
        value = outputs[0].new_zeros(()) if isinstance(outputs, torch.Tensor) else heads[0].new_zeros(())
        for w, head in zip(weights, heads, strict=True):
            t = (
                target
                if head.shape[2:] == target.shape[2:]
                else F.interpolate(target.float(), head.shape[2:], mode="nearest")
            )
            value = value + (w / total) * self.loss(head, t)
        return value


@losses.register("dice_ce")
def dice_ce(*, deep_supervision: bool = False, batch_dice: bool = True, smooth: float = 1e-5) -> torch.nn.Module:
    """Soft Dice + cross-entropy on integer label targets ``(B, 1, *spatial)`` (MONAI ``DiceCELoss``).

    Args:
        deep_supervision: Wrap in :class:`DeepSupervisionLoss` for networks with several outputs.
        batch_dice: Compute Dice over the whole batch (nnU-Net's default for 3D), not per sample.
        smooth: Smoothing term of the Dice ratio.
    """
    from monai.losses import DiceCELoss

    base = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        batch=batch_dice,
        smooth_nr=smooth,
        smooth_dr=smooth,
        include_background=False,
    )
    return DeepSupervisionLoss(base) if deep_supervision else base
