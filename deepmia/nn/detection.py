"""Detection networks over MONAI: RetinaNet (2D and 3D) on a ResNet + feature-pyramid backbone, without torchvision.

MONAI's ``resnet_fpn_feature_extractor`` and ``BackboneWithFPN`` reach into torchvision (its layer-validation
helper and ``IntermediateLayerGetter``), which cannot be installed beside our torch build. :class:`ResNetFPN`
replaces just that part: it runs a MONAI ResNet's stem and stages itself, hands the chosen stages' outputs to
MONAI's own ``FeaturePyramidNetwork`` (with the usual extra max-pooled level) and exposes ``out_channels`` as
MONAI's ``RetinaNet`` expects. MONAI's ``RetinaNetDetector`` also tests its matcher with ``isinstance`` against
torchvision's ``Matcher``, which fails without torchvision even when the ATSS matcher is set;
:class:`Detector` overrides that one method with the ATSS branch alone. Everything else (RetinaNet heads,
anchors, ATSS matching, hard-negative sampling, box coding, NMS) is MONAI's.

Example:
    >>> from deepmia.nn import build_network
    >>> net = build_network("retinanet", spatial_dims=2, in_channels=3, num_classes=3, num_anchors=3)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from monai.networks.nets import resnet
from torch import nn

from deepmia.errors import InvalidArgumentError
from deepmia.nn import networks

__all__ = ["ResNetFPN", "FloatRetinaNet", "Detector", "retinanet", "feature_strides", "TINY_LEVEL"]

TINY_LEVEL = 4  #: pyramid levels with fewer pixels than this along an axis run the heads in float32


class ResNetFPN(nn.Module):
    """A MONAI ResNet whose stages ``returned_layers`` feed a feature pyramid (plus one max-pooled coarser level).

    Args:
        backbone: A MONAI ``ResNet`` (its pooling and classifier are not used).
        spatial_dims: 2 or 3.
        returned_layers: ResNet stages (1-4) whose outputs the pyramid uses, finest first.
        out_channels: Channels of every pyramid level.

    The pyramid has ``len(returned_layers) + 1`` levels; level ``i`` has stride :func:`feature_strides` ``[i]``.
    """

    def __init__(
        self, backbone: resnet.ResNet, *, spatial_dims: int, returned_layers: Sequence[int], out_channels: int
    ) -> None:
        super().__init__()
        layers = list(returned_layers)
        if not layers or sorted(layers) != layers or min(layers) < 1 or max(layers) > 4:
            raise InvalidArgumentError(f"returned_layers must be increasing stage numbers in 1..4, got {layers}")
        self.backbone = backbone
        self.returned_layers = layers
        in_channels = [_stage_channels(getattr(backbone, f"layer{k}")) for k in layers]
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=spatial_dims, in_channels_list=in_channels, out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(spatial_dims),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pyramid feature maps, finest first."""
        b = self.backbone
        x = b.act(b.bn1(b.conv1(x)))
        if not b.no_max_pool:
            x = b.maxpool(x)
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for k in range(1, max(self.returned_layers) + 1):
            x = getattr(b, f"layer{k}")(x)
            if k in self.returned_layers:
                feats[str(len(feats))] = x
        return self.fpn(feats)


class FloatRetinaNet(RetinaNet):
    """MONAI's ``RetinaNet`` whose head outputs are float32 even under bf16 autocast.

    Convolutions run in bf16 where autocast says so; the focal loss, box decoding and NMS then work on float32
    (bf16's 8-bit mantissa would round a 300-pixel coordinate to 2 pixels). Pyramid levels smaller than
    :data:`TINY_LEVEL` pixels along an axis go through the heads in float32: on such maps (the coarsest level
    of a 3D pyramid, 2x2x2) oneDNN's bf16 backward pass of the shared head convolutions intermittently writes
    NaN into the weight gradient (seen on this CPU every few steps, never in float32), which poisons the
    weights while the loss stays finite. These levels hold a handful of positions, so float32 costs nothing.
    """

    def forward(self, images: torch.Tensor) -> Any:
        """Classification and box-regression maps of every level, as float32."""
        features = self.feature_extractor(images)
        maps = list(features.values()) if isinstance(features, dict) else list(features)
        cls, reg = [], []
        for f in maps:
            tiny = min(f.shape[2:]) < TINY_LEVEL
            with torch.autocast(f.device.type, enabled=False) if tiny else nullcontext():
                x = f.float() if tiny else f
                cls.extend(t.float() for t in self.classification_head([x]))
                reg.extend(t.float() for t in self.regression_head([x]))
        if self.use_list_output:
            return cls + reg
        return {self.cls_key: cls, self.box_reg_key: reg}


class Detector(RetinaNetDetector):
    """MONAI's ``RetinaNetDetector`` restricted to its ATSS matcher, so it runs without torchvision."""

    def compute_anchor_matched_idxs(
        self, anchors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
        num_anchor_locs_per_level: Sequence[int],
    ) -> list[torch.Tensor]:
        """Matched ground-truth index per anchor (negative: unmatched), by ATSS; see MONAI's method."""
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise InvalidArgumentError("the detector needs the ATSS matcher: call set_atss_matcher() first")
        matched = []
        for anchors_i, targets_i in zip(anchors, targets, strict=True):
            boxes = targets_i[self.target_box_key]
            if boxes.numel() == 0:  # a negative image: every anchor is background
                matched.append(torch.full((anchors_i.size(0),), -1, dtype=torch.int64, device=anchors_i.device))
                continue
            _, idx = self.proposal_matcher(boxes.to(anchors_i.device), anchors_i, num_anchor_locs_per_level,
                                           self.num_anchors_per_loc)
            matched.append(idx)
        return matched


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: its last batch norm's width."""
    norms = [m for m in stage.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    return int(norms[-1].num_features)


def feature_strides(returned_layers: Sequence[int]) -> list[int]:
    """Stride (input pixels per feature pixel) of each pyramid level: stem 4, x2 per later stage, x2 extra level."""
    strides = [4 * 2 ** (k - 1) for k in returned_layers]
    return [*strides, strides[-1] * 2]


@networks.register("retinanet")
def retinanet(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    num_anchors: int,
    widths: Sequence[int] = (32, 64, 128, 256),
    blocks: Sequence[int] = (1, 1, 1, 1),
    returned_layers: Sequence[int] = (1, 2, 3),
    fpn_channels: int = 128,
) -> FloatRetinaNet:
    """MONAI RetinaNet (classification and box-regression heads on every pyramid level) on :class:`ResNetFPN`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        num_classes: Object classes (no background class: the heads are sigmoid per class).
        num_anchors: Anchors per feature-map position (the anchor generator's count).
        widths: Channels of the four ResNet stages.
        blocks: Basic residual blocks per stage.
        returned_layers: Stages feeding the pyramid (see :func:`feature_strides`).
        fpn_channels: Channels of the pyramid and of the heads.
    """
    if spatial_dims not in (2, 3):
        raise InvalidArgumentError(f"retinanet needs spatial_dims 2 or 3, got {spatial_dims}")
    if len(widths) != 4 or len(blocks) != 4:
        raise InvalidArgumentError(f"widths and blocks need 4 entries (one per stage), got {widths}, {blocks}")
    backbone = resnet.ResNet(
        block=resnet.ResNetBlock, layers=list(blocks), block_inplanes=list(widths), spatial_dims=spatial_dims,
        n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2, num_classes=1,
    )
    backbone.fc = None
    extractor = ResNetFPN(backbone, spatial_dims=spatial_dims, returned_layers=returned_layers,
                          out_channels=fpn_channels)
    stride = feature_strides(returned_layers)[-1]
    return FloatRetinaNet(spatial_dims=spatial_dims, num_classes=num_classes, num_anchors=num_anchors,
                     feature_extractor=extractor, size_divisible=[stride] * spatial_dims)
