"""RetinaNet over MONAI: pyramid levels too small for oneDNN's bf16 kernels run the heads in float32."""

from __future__ import annotations

import pytest
import torch

from deepmia.engine.runtime import bf16_supported
from deepmia.nn import build_network
from deepmia.nn.detection import TINY_LEVEL


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network("retinanet", spatial_dims=3, in_channels=1, num_classes=1, num_anchors=2,
                        widths=[8, 16, 32, 64], fpn_channels=16, returned_layers=[1, 2, 3])
    return net.eval()


def test_head_outputs_are_float32_per_level():
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = _net()(x)
    sizes = [t.shape[2:] for t in out["classification"]]
    assert [tuple(s) for s in sizes] == [(8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)]
    assert all(t.dtype == torch.float32 for v in out.values() for t in v)
    assert [t.shape[1] for t in out["box_regression"]] == [2 * 6] * 4


@pytest.mark.skipif(not bf16_supported(), reason="no bf16 on this CPU")
def test_tiny_levels_run_the_heads_in_float32_under_bf16_autocast():
    net, x = _net(), torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = list(net.feature_extractor(x).values())
            mixed = net(x)
        fp32 = [net.classification_head([f.float()])[0] for f in feats]  # the heads in float32 on the same features
    tiny = [min(f.shape[2:]) < TINY_LEVEL for f in feats]
    assert tiny == [False, False, False, True]  # 16, 8, 4: bf16; 2x2x2: float32
    for is_tiny, m, r in zip(tiny, mixed["classification"], fp32, strict=True):
        assert m.dtype == torch.float32
        assert torch.equal(m, r) == is_tiny  # float32-exact on tiny levels only
