"""Every registered classification network: 2D and 3D, shared interface, fusion variants."""

from __future__ import annotations

import pytest
import torch

from deepmia.errors import InvalidArgumentError
from deepmia.nn import build_network
from deepmia.nn.classification import FusionClassifier, ImageClassifier

SMALL = {
    "resnet": {"depth": 10, "widths": [8, 8, 16, 16]},
    "densenet": {"depth": 0, "init_features": 8, "growth_rate": 4},
    "efficientnet": {},
    "seresnet": {"depth": 18, "inplanes": 8},
}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("small_input", [True, False])
def test_classifier_shapes_and_interface(name: str, dims: int, small_input: bool) -> None:
    size = 16 if small_input else 32
    net = build_network(name, spatial_dims=dims, in_channels=2, out_channels=3, small_input=small_input,
                        **SMALL[name])
    assert isinstance(net, ImageClassifier)
    x = torch.randn(2, 2, *([size] * dims))
    f = net.forward_features(x)
    assert f.shape == (2, net.num_features)
    assert net.forward_head(f).shape == (2, 3)
    assert isinstance(net.dropout, torch.nn.Dropout)


def test_small_input_keeps_spatial_resolution() -> None:
    seen = {}
    for small in (True, False):
        net = build_network("resnet", spatial_dims=2, in_channels=1, out_channels=2, small_input=small,
                            **SMALL["resnet"]).eval()
        out = []
        net.backbone.layer4.register_forward_hook(lambda _m, _i, o, out=out: out.append(o.shape))
        net(torch.randn(1, 1, 28, 28))
        seen[small] = out[0][-1]
    assert seen[True] == 4 and seen[False] == 1  # 28 px: 4x4 last feature map vs 1x1 with the ImageNet stem


@pytest.mark.parametrize("mode", ["late", "film"])
def test_fusion_uses_both_inputs(mode: str) -> None:
    torch.manual_seed(0)
    net = build_network("fusion", spatial_dims=2, in_channels=1, out_channels=2, tabular_features=4,
                        backbone_params={**SMALL["resnet"], "small_input": True}, mode=mode).eval()
    assert isinstance(net, FusionClassifier)
    if mode == "film":  # identity at initialisation: perturb so the table acts
        torch.nn.init.normal_(net.film.weight, std=0.5)
    x, t = torch.randn(2, 1, 16, 16), torch.randn(2, 4)
    base = net(x, t)
    assert not torch.allclose(base, net(x, t + 1))
    assert not torch.allclose(base, net(x + 1, t))


def test_bad_parameters_are_reported() -> None:
    with pytest.raises(InvalidArgumentError, match="depth"):
        build_network("resnet", spatial_dims=2, in_channels=1, out_channels=2, depth=11)
    with pytest.raises(InvalidArgumentError, match="spatial_dims"):
        build_network("densenet", spatial_dims=4, in_channels=1, out_channels=2)
    with pytest.raises(InvalidArgumentError, match="fusion mode"):
        build_network("fusion", spatial_dims=2, in_channels=1, out_channels=2, tabular_features=2, mode="early")
