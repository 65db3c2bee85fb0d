"""Every registered network builds and runs a forward pass (timm's registry-wide smoke test)."""

from __future__ import annotations

import pytest
import torch

from deepmia.nn import _load, build_network, networks

_load()
SMALL = {  # name -> (parameters, inputs); small widths so the whole registry runs in seconds
    "dynunet": (dict(spatial_dims=2, in_channels=1, out_channels=3, filters=[4, 8, 16], strides=[1, 2, 2],
                     kernels=[3, 3, 3]), [(2, 1, 32, 32)]),
    "resnet": (dict(spatial_dims=2, in_channels=1, out_channels=2, widths=[4, 8, 16, 32], small_input=True),
               [(2, 1, 28, 28)]),
    "densenet": (dict(spatial_dims=2, in_channels=3, out_channels=2, init_features=8, growth_rate=4,
                      small_input=True), [(2, 3, 32, 32)]),
    "efficientnet": (dict(spatial_dims=2, in_channels=1, out_channels=2, small_input=True), [(2, 1, 32, 32)]),
    "seresnet": (dict(spatial_dims=3, in_channels=1, out_channels=2, inplanes=8, small_input=True),
                 [(2, 1, 16, 16, 16)]),
    "fusion": (dict(spatial_dims=2, in_channels=1, out_channels=2, tabular_features=3,
                    backbone_params={"widths": [4, 8, 16, 32], "small_input": True}), [(2, 1, 28, 28), (2, 3)]),
    "voxelmorph": (dict(spatial_dims=2, channels=(4, 8, 8, 8, 8, 8), final_channels=(4, 4)),
                   [(1, 1, 32, 32), (1, 1, 32, 32)]),
    "affine_voxelmorph": (dict(spatial_dims=2, channels=(4, 8, 8, 8, 8, 8), final_channels=(4, 4),
                               affine_channels=(4, 8, 8, 8)), [(1, 1, 32, 32), (1, 1, 32, 32)]),
    "retinanet": (dict(spatial_dims=2, in_channels=1, num_classes=2, num_anchors=3, widths=(4, 8, 16, 32),
                       fpn_channels=8), [(1, 1, 64, 64)]),
}


def test_every_registered_network_has_a_smoke_configuration():
    assert sorted(SMALL) == networks.names()


@pytest.mark.parametrize("name", networks.names())
def test_network_builds_and_runs(name):
    params, shapes = SMALL[name]
    net = build_network(name, **params).eval()
    torch.manual_seed(0)
    inputs = [torch.rand(s) for s in shapes]
    with torch.no_grad():
        out = net(*inputs)
    tensors = _tensors(out)
    assert tensors and all(torch.isfinite(t).all() for t in tensors)
    assert all(t.shape[0] == shapes[0][0] for t in tensors)  # one output per batch item


def _tensors(out):
    if torch.is_tensor(out):
        return [out]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in _tensors(item)]


def test_unknown_network_names_the_valid_ones():
    from deepmia.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="dynunet"):
        build_network("dynunett", spatial_dims=2)
