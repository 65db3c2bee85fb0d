"""The segmentation network a plan describes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from deepmia.tasks.segment.plan import SegmentPlan

__all__ = ["build_model"]


def build_model(plan: SegmentPlan, *, deep_supervision: bool | None = None) -> torch.nn.Module:
    """The plan's network (deep supervision as planned unless overridden, e.g. off for inference)."""
    from deepmia.nn import build_network

    params = dict(plan.network_params)
    if deep_supervision is not None and "deep_supervision" in params:
        params["deep_supervision"] = deep_supervision
    return build_network(
        plan.network,
        spatial_dims=plan.spatial_dims,
        in_channels=plan.in_channels,
        out_channels=plan.num_classes,
        **params,
    )
