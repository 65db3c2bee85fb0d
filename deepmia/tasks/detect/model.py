"""The detector a plan describes: MONAI's RetinaNet with the plan's anchors, matcher and sampler."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from deepmia.tasks.detect.plan import DetectPlan

__all__ = ["build_detector"]


def build_detector(plan: DetectPlan) -> torch.nn.Module:
    """MONAI's RetinaNet detector the plan describes: network, anchors, ATSS matcher, hard-negative sampler."""
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    from deepmia.nn import build_network
    from deepmia.nn.detection import Detector

    a = plan.anchors
    net = build_network(plan.network, spatial_dims=plan.spatial_dims, in_channels=plan.in_channels,
                        num_classes=len(plan.class_names), num_anchors=len(a.base_shapes), **plan.network_params)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=a.feature_map_scales,
                                             base_anchor_shapes=[tuple(s) for s in a.base_shapes])
    det = Detector(net, anchors, spatial_dims=plan.spatial_dims, num_classes=len(plan.class_names),
                   size_divisible=[plan.stride] * plan.spatial_dims)
    det.set_atss_matcher(num_candidates=a.atss_candidates, center_in_gt=False)
    s = plan.schedule
    det.set_hard_negative_sampler(batch_size_per_image=s.sampler_per_image, positive_fraction=s.positive_fraction,
                                  pool_size=20, min_neg=16)
    det.set_target_keys(box_key="box", label_key="label")
    return det
