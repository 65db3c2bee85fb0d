"""The classification network a plan describes, and how to run it on images (+ clinical features)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from deepmia.tasks.classify.plan import ClassifyPlan

__all__ = ["build_model", "run_model"]


def build_model(plan: ClassifyPlan, *, network_params: dict[str, Any] | None = None) -> torch.nn.Module:
    """The network the plan describes (a fusion model when the plan has a clinical table)."""
    from deepmia.nn import build_network

    params = {**plan.network_params, **(network_params or {}), "dropout": plan.dropout}
    common = {"spatial_dims": plan.spatial_dims, "in_channels": len(plan.channels), "out_channels": plan.num_outputs}
    if plan.tabular is not None:
        return build_network("fusion", **common, tabular_features=plan.tabular.width, backbone=plan.network,
                             backbone_params=params, mode=plan.fusion_mode, hidden=plan.fusion_hidden,
                             dropout=plan.dropout)
    return build_network(plan.network, **common, **params)


def run_model(model: torch.nn.Module, x: torch.Tensor, tabular: torch.Tensor | None) -> torch.Tensor:
    """Logits of images ``x`` (with the encoded clinical features for a fusion model)."""
    return model(x) if tabular is None else model(x, tabular)
