"""Classification networks over MONAI (ResNet, DenseNet, EfficientNet, SE-ResNet; 2D and 3D) and image + tabular fusion.

Every network built here is an :class:`ImageClassifier`: a MONAI backbone whose own classifier layer is
removed, a pooled feature vector (``forward_features``), and a head of dropout plus a linear layer
(``forward_head``). The dropout stays in the head so MC-dropout uncertainty works for every family, and one
interface serves fusion, explanations and export.

``small_input=True`` adapts a backbone to images of a few dozen pixels (MedMNIST's 28 px): a 3x3 stride-1 stem
and no stem max-pool, so the last feature map is still 3-4 px wide instead of 1 px.

:class:`FusionClassifier` joins an image backbone with tabular (clinical) features, either by late fusion
(concatenating the pooled image features with an MLP embedding of the table) or by FiLM (the table predicts a
per-channel scale and shift of the image features; Perez et al., AAAI 2018). Per-channel affine modulation
commutes with global average pooling, so modulating the pooled vector is exactly FiLM on the last feature map.

Example:
    >>> from deepmia.nn import build_network
    >>> net = build_network("resnet", spatial_dims=2, in_channels=1, out_channels=2, depth=18, small_input=True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from deepmia._validate import look_up_option
from deepmia.errors import InvalidArgumentError
from deepmia.nn import networks

__all__ = ["ImageClassifier", "FusionClassifier", "RESNET_LAYERS", "DENSENET_BLOCKS", "SERESNET_LAYERS"]

RESNET_LAYERS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
DENSENET_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 0: (2, 2, 2, 2)}
SERESNET_LAYERS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 18: (1, 1, 1, 1)}
EFFICIENTNET_MODELS = tuple(f"efficientnet-b{i}" for i in range(8))


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


class ImageClassifier(nn.Module):
    """A backbone that maps an image ``(B, C, *spatial)`` to pooled features ``(B, F)``, then dropout + linear.

    Args:
        backbone: Module returning ``(B, F)`` features.
        num_features: ``F``.
        out_channels: Number of logits (classes).
        dropout: Dropout probability before the linear head (kept active for MC dropout).
        spatial_dims: 2 or 3 (recorded for callers: explanations, predictors).
        in_channels: Image channels the network expects.
    """

    def __init__(
        self, backbone: nn.Module, *, num_features: int, out_channels: int, dropout: float, spatial_dims: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_features = num_features
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, out_channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features ``(B, F)``."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` from pooled features."""
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)``."""
        return self.forward_head(self.forward_features(x))


def _wrap(net: nn.Module, features: int, spatial_dims: int, in_channels: int, out_channels: int,
          dropout: float) -> ImageClassifier:
    return ImageClassifier(net, num_features=features, out_channels=out_channels, dropout=dropout,
                           spatial_dims=spatial_dims, in_channels=in_channels)


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise InvalidArgumentError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def _choice(value: int, table: dict[int, Any], what: str) -> Any:
    if value not in table:
        raise InvalidArgumentError(f"unknown {what} {value}; valid: {', '.join(map(str, sorted(table)))}")
    return table[value]


@networks.register("resnet")
def resnet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    depth: int = 18,
    widths: Sequence[int] = (64, 128, 256, 512),
    small_input: bool = False,
    dropout: float = 0.2,
) -> ImageClassifier:
    """MONAI ResNet (basic blocks for depth 10/18/34, bottlenecks for 50) as an :class:`ImageClassifier`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Number of classes.
        depth: 10, 18, 34 or 50.
        widths: Channels of the four stages.
        small_input: 3x3 stride-1 stem without max-pool (for images under ~64 px).
        dropout: Dropout before the linear head.
    """
    _check_dims(spatial_dims)
    layers = _choice(depth, RESNET_LAYERS, "ResNet depth")
    if len(widths) != 4:
        raise InvalidArgumentError(f"ResNet widths needs 4 stage widths, got {list(widths)}")
    block = "bottleneck" if depth >= 50 else "basic"
    net = nets.ResNet(
        block, list(layers), list(widths), spatial_dims=spatial_dims, n_input_channels=in_channels,
        conv1_t_size=3 if small_input else 7, conv1_t_stride=1 if small_input else 2, no_max_pool=small_input,
        feed_forward=False,
    )
    features = widths[3] * (4 if block == "bottleneck" else 1)
    return _wrap(net, features, spatial_dims, in_channels, out_channels, dropout)


@networks.register("densenet")
def densenet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    depth: int = 121,
    init_features: int = 64,
    growth_rate: int = 32,
    small_input: bool = False,
    dropout: float = 0.2,
) -> ImageClassifier:
    """MONAI DenseNet (121/169/201; depth 0 is a light 2-2-2-2 variant) as an :class:`ImageClassifier`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Number of classes.
        depth: 121, 169, 201, or 0 for four blocks of two layers.
        init_features: Channels of the stem.
        growth_rate: Channels each dense layer adds.
        small_input: 3x3 stride-1 stem without max-pool.
        dropout: Dropout before the linear head.
    """
    _check_dims(spatial_dims)
    net = nets.DenseNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, init_features=init_features,
        growth_rate=growth_rate, block_config=_choice(depth, DENSENET_BLOCKS, "DenseNet depth"),
    )
    if small_input:
        net.features.conv0 = _conv(spatial_dims)(in_channels, init_features, 3, padding=1, bias=False)
        net.features.pool0 = nn.Identity()
    features = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return _wrap(net, features, spatial_dims, in_channels, out_channels, dropout)


@networks.register("efficientnet")
def efficientnet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    variant: str = "efficientnet-b0",
    small_input: bool = False,
    dropout: float = 0.2,
) -> ImageClassifier:
    """MONAI EfficientNet (b0-b7, trained from scratch) as an :class:`ImageClassifier`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Number of classes.
        variant: ``"efficientnet-b0"`` ... ``"efficientnet-b7"``.
        small_input: Stride-1 stem.
        dropout: Dropout before the linear head.
    """
    _check_dims(spatial_dims)
    variant = look_up_option(variant, EFFICIENTNET_MODELS, what="EfficientNet variant")
    net = nets.EfficientNetBN(variant, pretrained=False, progress=False, spatial_dims=spatial_dims,
                              in_channels=in_channels, num_classes=out_channels)
    if small_input:
        net._conv_stem.stride = (1,) * spatial_dims
        # MONAI pads the stem for stride 2 ("same" padding); a stride-1 3x3 conv needs one pixel all round.
        net._conv_stem_padding = nn.ConstantPad3d(1, 0.0) if spatial_dims == 3 else nn.ConstantPad2d(1, 0.0)
    features = net._fc.in_features
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    return _wrap(net, features, spatial_dims, in_channels, out_channels, dropout)


@networks.register("seresnet")
def seresnet(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    depth: int = 50,
    inplanes: int = 64,
    small_input: bool = False,
    dropout: float = 0.2,
) -> ImageClassifier:
    """MONAI SE-ResNet (squeeze-and-excitation bottlenecks; 50/101, or 18 for one block per stage).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Number of classes.
        depth: 50, 101, or 18 (four single-block stages).
        inplanes: Channels of the stem.
        small_input: 3x3 stride-1 stem without max-pool.
        dropout: Dropout before the linear head.
    """
    _check_dims(spatial_dims)
    net = nets.SENet(
        spatial_dims=spatial_dims, in_channels=in_channels, block="se_resnet_bottleneck",
        layers=_choice(depth, SERESNET_LAYERS, "SE-ResNet depth"), groups=1, reduction=16, dropout_prob=None,
        inplanes=inplanes, downsample_kernel_size=1, input_3x3=False, num_classes=out_channels,
    )
    if small_input:
        net.layer0.conv1 = _conv(spatial_dims)(in_channels, inplanes, 3, padding=1, bias=False)
        net.layer0.pool = nn.Identity()
    features = net.last_linear.in_features
    net.last_linear = nn.Identity()
    return _wrap(net, features, spatial_dims, in_channels, out_channels, dropout)


class FusionClassifier(nn.Module):
    """Image classifier fused with tabular features: late fusion (``"late"``) or FiLM (``"film"``).

    The forward call takes ``(image, tabular)``; ``tabular`` is ``(B, T)`` float (encoded and standardised by
    the task's table encoder).

    Args:
        image_model: An :class:`ImageClassifier` (its own head is not used).
        tabular_features: ``T``.
        out_channels: Number of classes.
        mode: ``"late"`` or ``"film"``.
        hidden: Width of the tabular MLP and of the fused hidden layer.
        dropout: Dropout before the output layer.
    """

    def __init__(
        self, image_model: ImageClassifier, *, tabular_features: int, out_channels: int, mode: str = "late",
        hidden: int = 64, dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.mode = look_up_option(mode, ("late", "film"), what="fusion mode")
        self.image_model = image_model
        self.spatial_dims = image_model.spatial_dims
        self.in_channels = image_model.in_channels
        self.out_channels = out_channels
        self.tabular_features = tabular_features
        f = image_model.num_features
        self.tabular = nn.Sequential(nn.Linear(tabular_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                     nn.ReLU())
        if self.mode == "late":
            self.fuse = nn.Sequential(nn.Linear(f + hidden, hidden), nn.ReLU())
            head_in = hidden
        else:
            self.film = nn.Linear(hidden, 2 * f)
            nn.init.zeros_(self.film.weight)  # start as the identity modulation
            nn.init.zeros_(self.film.bias)
            head_in = f
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(head_in, out_channels)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)``."""
        f = self.image_model.forward_features(image)
        t = self.tabular(tabular.to(f.dtype))
        if self.mode == "late":
            h = self.fuse(torch.cat([f, t], dim=1))
        else:
            gamma, beta = self.film(t).chunk(2, dim=1)
            h = f * (1 + gamma) + beta
        return self.head(self.dropout(h))


@networks.register("fusion")
def fusion(
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    tabular_features: int,
    backbone: str = "resnet",
    backbone_params: dict[str, Any] | None = None,
    mode: str = "late",
    hidden: int = 64,
    dropout: float = 0.2,
) -> FusionClassifier:
    """An image backbone from this module fused with ``tabular_features`` clinical features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels.
        out_channels: Number of classes.
        tabular_features: Width of the encoded table.
        backbone: ``"resnet"``, ``"densenet"``, ``"efficientnet"`` or ``"seresnet"``.
        backbone_params: Keyword parameters of the backbone factory.
        mode: ``"late"`` (concatenate) or ``"film"`` (feature-wise modulation).
        hidden: Width of the tabular MLP.
        dropout: Dropout before the output layer.
    """
    if tabular_features < 1:
        raise InvalidArgumentError(f"tabular_features must be >= 1, got {tabular_features}")
    factory = {"resnet": resnet, "densenet": densenet, "efficientnet": efficientnet, "seresnet": seresnet}
    build = factory[look_up_option(backbone, factory, what="fusion backbone")]
    image_model = build(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                        **(backbone_params or {}))
    return FusionClassifier(image_model, tabular_features=tabular_features, out_channels=out_channels, mode=mode,
                            hidden=hidden, dropout=dropout)
