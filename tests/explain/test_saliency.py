"""Saliency maps: target layers found in every network family, and Adebayo's and the deletion sanity checks on
real PneumoniaMNIST test images with the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmia.errors import InvalidArgumentError
from deepmia.explain.saliency import (
    MIN_CAM_SIZE,
    TabularBound,
    deletion_drops,
    occlusion_drop,
    randomization_similarity,
    saliency_map,
    target_layer,
)
from deepmia.nn import build_network
from tests.explain.conftest import passes_deletion_check

# At 28 px the small-input backbones reach 7x7 in their third stage and 4x4 (too coarse) in their last.
FAMILIES = [
    ("resnet", {"depth": 10, "widths": [8, 8, 16, 16], "small_input": True}, "backbone.layer3"),
    ("densenet", {"depth": 0, "init_features": 8, "growth_rate": 4, "small_input": True},
     "backbone.features.transition3.conv"),
    ("seresnet", {"depth": 18, "inplanes": 8, "small_input": True}, "backbone.layer3"),
    ("efficientnet", {"small_input": True}, None),
]


@pytest.mark.parametrize(("name", "params", "expected"), FAMILIES)
@pytest.mark.parametrize("dims", [2, 3])
def test_target_layer_found_for_every_family(name: str, params: dict, expected: str | None, dims: int) -> None:
    net = build_network(name, spatial_dims=dims, in_channels=1, out_channels=2, **params).eval()
    x = torch.randn(1, 1, *([28] * dims))
    layer = target_layer(net, x)
    if expected:
        assert layer == expected
    sizes = {}
    hook = net.get_submodule(layer).register_forward_hook(lambda _m, _i, out: sizes.update(out=out.shape[2:]) or None)
    net(x)
    hook.remove()
    assert min(sizes["out"]) >= MIN_CAM_SIZE
    m = saliency_map(net, x, method="gradcampp", class_index=1, layer=layer)
    assert m.shape == x.shape[2:] and 0 <= m.min() and m.max() <= 1


def test_target_layer_through_fusion_wrapper() -> None:
    net = build_network("fusion", spatial_dims=2, in_channels=1, out_channels=2, tabular_features=3,
                        backbone_params={"depth": 10, "widths": [8, 8, 16, 16], "small_input": True}).eval()
    bound = TabularBound(net, torch.zeros(1, 3))
    assert target_layer(bound, torch.randn(1, 1, 28, 28)) == "model.image_model.backbone.layer3"


def test_target_layer_on_inputs_smaller_than_the_minimum_map() -> None:
    net = build_network("resnet", spatial_dims=2, in_channels=1, out_channels=2, depth=10, widths=[8, 8, 16, 16],
                        small_input=True).eval()
    assert target_layer(net, torch.randn(1, 1, 6, 6)) == "backbone.layer1"  # full resolution: 6 px, not 7


def test_maps_change_when_weights_are_randomised(pneumonia_test: tuple) -> None:
    predictor, x, labels, _ = pneumonia_test
    x = x[labels == 1][:16]  # pneumonia cases: the trained model should find evidence in the lungs
    trained = predictor.models[0]
    torch.manual_seed(0)  # the random network's draw must not depend on which tests ran before in this worker
    random_net = build_network(predictor.plan.network, spatial_dims=2, in_channels=1, out_channels=2,
                               **predictor.plan.network_params).eval()
    layer = target_layer(trained, x[:1])
    sims = []
    for i in range(len(x)):
        a = saliency_map(trained, x[i:i + 1], method="gradcam", class_index=1, layer=layer)
        b = saliency_map(random_net, x[i:i + 1], method="gradcam", class_index=1, layer=layer)
        sims.append(randomization_similarity(a, b))
    # |rho|: a map that merely inverts under random weights (rho near -1) still follows the image, not the model
    assert np.mean(np.abs(sims)) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_filling_the_highlighted_voxels_lowers_probability_more(pneumonia_test: tuple, method: str) -> None:
    # Deletion check on 60 test images, each explained for its predicted class: the probability drop with the
    # map's top 10% filled with the dataset mean vs the mean drop over 8 shifted copies of that mask.
    # (Occlusion maps: test_deletion_occlusion.py.)
    predictor, x, _, predicted = pneumonia_test
    top, shifted = deletion_drops(predictor.models[0], x, predicted, method=method, fraction=0.1)
    assert passes_deletion_check(top, shifted, method)


def test_occlusion_drop_rejects_a_map_of_another_shape() -> None:
    net = build_network("resnet", spatial_dims=2, in_channels=1, out_channels=2, depth=10, widths=[8, 8, 16, 16],
                        small_input=True).eval()
    with pytest.raises(InvalidArgumentError, match="shape"):
        occlusion_drop(net, torch.zeros(1, 1, 28, 28), np.zeros((14, 14)), class_index=0,
                       rng=np.random.default_rng(0))
