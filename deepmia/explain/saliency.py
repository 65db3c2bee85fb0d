"""Saliency maps for classifiers: Grad-CAM, Grad-CAM++ (MONAI's implementations) and occlusion sensitivity.

The Grad-CAM target layer is found by running the network once and taking the last module, in execution
order, that has parameters and whose output map is at least :data:`MIN_CAM_SIZE` (7) voxels wide on every axis
(the last convolutional stage on ImageNet-sized inputs, an earlier stage on small ones); a user never names
layers. Every map is returned at the network input's size, scaled to [0, 1], higher meaning more evidence for the
class.

Two sanity checks (Adebayo et al., NeurIPS 2018; the deletion test of Samek et al., 2017) are provided for
tests and benchmarks: :func:`randomization_similarity` and :func:`occlusion_drop` (:func:`deletion_drops` over many
images).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from deepmia._validate import look_up_option
from deepmia._warnings import library_warnings_ignored
from deepmia.errors import InvalidArgumentError

__all__ = [
    "METHODS",
    "MIN_CAM_SIZE",
    "target_layer",
    "saliency_map",
    "randomization_similarity",
    "occlusion_drop",
    "deletion_drops",
    "TabularBound",
]

METHODS = ("gradcam", "gradcampp", "occlusion")


class TabularBound(nn.Module):
    """Wrap a fusion model so it takes the image alone, its case's clinical features fixed.

    MONAI's explainers call ``model(x)``.
    """

    def __init__(self, model: nn.Module, tabular: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("tabular", tabular)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the bound clinical features (repeated over the batch)."""
        return self.model(x, self.tabular.expand(x.shape[0], -1))


MIN_CAM_SIZE = 7
"""Smallest Grad-CAM map side (voxels per axis) :func:`target_layer` accepts; smaller input axes count whole.

Seven is the last-stage size of the ImageNet networks Grad-CAM was designed on (224 px inputs). Measured on the
shipped 28 px ResNet-18 (deletion check of :func:`deletion_drops`, 10% of the voxels filled, first 60
PneumoniaMNIST test images, predicted class; drop at the map's top vs at shifted copies, one-sided Wilcoxon p):

=========  =========================  =========================
stage      Grad-CAM                   Grad-CAM++
=========  =========================  =========================
4x4        0.081 vs 0.034, p = 7e-3   0.086 vs 0.037, p = 3e-3
7x7        0.182 vs 0.042, p = 4e-7   0.187 vs 0.042, p = 7e-6
14x14      0.253 vs 0.047, p = 1e-5   0.067 vs 0.046, p = 0.82
28x28      0.040 vs 0.049, p = 1.0    0.043 vs 0.063, p = 1.0
=========  =========================  =========================

The 7x7 stage is the only one where both methods point clearly at the evidence.
"""


def target_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the deepest module with parameters whose output map is still at least :data:`MIN_CAM_SIZE` wide.

    The network runs once on ``example``; modules are ordered by when their forward pass ends, so a residual
    stage comes after its blocks and the deepest qualifying module is the end of the last stage whose output has
    at least ``min(MIN_CAM_SIZE, input side)`` voxels on every axis (and more than one voxel in all).

    Args:
        model: The classifier, called as ``model(example)``.
        example: One input ``(1, C, *spatial)``.

    Raises:
        InvalidArgumentError: No module produces a spatial map (not a convolutional network).
    """
    dims = example.dim()
    need = [min(MIN_CAM_SIZE, int(s)) for s in example.shape[2:]]
    order: list[str] = []
    hooks = []

    def hook(name: str) -> Any:
        def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if (isinstance(output, torch.Tensor) and output.dim() == dims and int(np.prod(output.shape[2:])) > 1
                    and all(int(s) >= n for s, n in zip(output.shape[2:], need, strict=True))):
                order.append(name)
        return record

    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters()):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise InvalidArgumentError(f"{type(model).__name__} has no layer with a spatial output to explain")
    return order[-1]


def _identity(m: torch.Tensor) -> torch.Tensor:
    return m


def _normalize(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def saliency_map(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str = "gradcam",
    class_index: int,
    layer: str | None = None,
    mask_size: int | Sequence[int] | None = None,
    activation: str = "softmax",
) -> np.ndarray:
    """A saliency map ``(*spatial)`` in [0, 1] of one image ``x`` ``(1, C, *spatial)`` for ``class_index``.

    Args:
        model: The classifier in eval mode, called as ``model(x)`` (wrap fusion models in :class:`TabularBound`).
        x: The network input.
        method: ``"gradcam"``, ``"gradcampp"`` or ``"occlusion"``.
        class_index: The class to explain.
        layer: Grad-CAM target layer (default: :func:`target_layer`).
        mask_size: Occlusion patch size (default: a seventh of each axis, at least 3).
        activation: ``"softmax"`` or ``"sigmoid"`` (occlusion measures the drop in this probability).

    Raises:
        InvalidArgumentError: Unknown method, or ``x`` is not a single image.
    """
    from monai.visualize import GradCAM, GradCAMpp, OcclusionSensitivity

    method = look_up_option(method, METHODS, what="saliency method")
    if x.dim() < 4 or x.shape[0] != 1:
        raise InvalidArgumentError(f"saliency_map explains one image (1, C, *spatial), got {tuple(x.shape)}")
    model.eval()
    x = x.float()
    if method == "occlusion":
        spatial = x.shape[2:]
        size = mask_size or [max(3, int(np.ceil(s / 7))) for s in spatial]
        act = (lambda z: z.softmax(1)) if activation == "softmax" else torch.sigmoid
        occ = OcclusionSensitivity(model, mask_size=size, n_batch=32, verbose=False, mode="mean_img", overlap=0.5,
                                   activate=act)
        with torch.no_grad(), library_warnings_ignored():  # MONAI's list indexing (see deepmia._warnings)
            # ... and its write through Tensor.__setitem__ with a list, attributed to torch itself: only here
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                                    category=UserWarning, module=r"torch\._tensor")
            base = float(act(model(x))[0, class_index])
            occ_map, _ = occ(x)  # (1, classes, *spatial): the class probability with each region occluded
        drop = base - occ_map[0, class_index].numpy()
        return _normalize(np.maximum(drop, 0.0)).astype(np.float32)
    name = layer or target_layer(model, x)
    cam_cls = GradCAM if method == "gradcam" else GradCAMpp
    # MONAI hooks the target layer's output; an in-place activation right after it (DenseNet's final ReLU,
    # EfficientNet's swish) would overwrite that hooked view, so in-place ops are switched off meanwhile.
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:
        m.inplace = False
    try:
        # MONAI's default post-processing maps (min, max) to (1, 0), flipping the map (Project-MONAI/tutorials
        # #1796): keep the raw upsampled map and scale it here, so that high means evidence for the class.
        cam = cam_cls(nn_module=model, target_layers=name, postprocessing=_identity)
        with torch.enable_grad():
            out = cam(x, class_idx=class_index)
    finally:
        for m in inplace:
            m.inplace = True
    model.zero_grad(set_to_none=True)
    return _normalize(out[0, 0].detach().numpy()).astype(np.float32)


def randomization_similarity(maps_trained: np.ndarray, maps_random: np.ndarray) -> float:
    """Spearman rank correlation of two saliency maps.

    Adebayo's model-randomisation check: a map that explains the model must change when the weights are
    randomised, so this should be low.
    """
    from scipy.stats import spearmanr

    a, b = np.ravel(maps_trained), np.ravel(maps_random)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _top_mask(saliency: np.ndarray, fraction: float) -> np.ndarray:
    k = max(1, round(fraction * saliency.size))
    mask = np.zeros(saliency.size, dtype=bool)
    mask[np.argsort(-saliency.ravel(), kind="stable")[:k]] = True
    return mask.reshape(saliency.shape)


def occlusion_drop(
    model: nn.Module,
    x: torch.Tensor,
    saliency: np.ndarray,
    *,
    class_index: int,
    fraction: float = 0.1,
    fill: float = 0.0,
    rng: np.random.Generator,
    n_random: int = 8,
    activation: str = "softmax",
) -> tuple[float, float]:
    """Drop in the class probability when the most salient voxels, or the same shape elsewhere, are filled.

    The deletion check (Samek et al., 2017): the voxels holding the top ``fraction`` of the map are set to
    ``fill``, and so, one copy at a time, are ``n_random`` copies of that mask shifted (cyclically) by a random
    offset, so that the control regions have the same size, shape and fill. A map that points at the evidence
    gives the larger drop on average over many images.

    Args:
        model: The classifier, called as ``model(x)``.
        x: One network input ``(1, C, *spatial)``.
        saliency: Its map ``(*spatial)``.
        class_index: The class whose probability is watched.
        fraction: Share of the voxels to fill.
        fill: Value written into the mask (0 is the dataset mean after standardisation).
        rng: Random generator for the shifts.
        n_random: Number of shifted masks.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        ``(drop with the salient voxels filled, mean drop with a shifted mask filled)``.

    Raises:
        InvalidArgumentError: ``saliency`` does not have ``x``'s spatial shape, or ``fraction`` is not in (0, 1).
    """
    spatial = tuple(x.shape[2:])
    if saliency.shape != spatial:
        raise InvalidArgumentError(f"saliency map shape {saliency.shape} differs from the input's {spatial}")
    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"fraction must be in (0, 1), got {fraction}")
    top = _top_mask(saliency, fraction)
    axes = tuple(range(len(spatial)))
    masks = [top] + [np.roll(top, [int(rng.integers(0, n)) for n in spatial], axis=axes) for _ in range(n_random)]
    act = (lambda z: z.softmax(1)) if activation == "softmax" else torch.sigmoid
    with torch.no_grad():
        batch = x.float().repeat(len(masks) + 1, *([1] * (x.dim() - 1)))
        for i, m in enumerate(masks, start=1):
            batch[i, :, torch.from_numpy(m)] = fill
        p = act(model(batch))[:, class_index].numpy()
    return float(p[0] - p[1]), float(np.mean(p[0] - p[2:]))


def deletion_drops(
    model: nn.Module,
    x: torch.Tensor,
    class_indices: Sequence[int],
    *,
    method: str,
    layer: str | None = None,
    fraction: float = 0.1,
    n_random: int = 8,
    seed: int = 0,
    activation: str = "softmax",
) -> tuple[np.ndarray, np.ndarray]:
    """The deletion check over images: :func:`occlusion_drop` of each image's ``method`` map.

    Args:
        model: The classifier in eval mode, called as ``model(x)``.
        x: Network inputs ``(N, C, *spatial)``.
        class_indices: The class to explain in each image (usually the predicted one).
        method: ``"gradcam"``, ``"gradcampp"`` or ``"occlusion"``.
        layer: Grad-CAM target layer (default: :func:`target_layer` of the first image).
        fraction: Share of the voxels to fill.
        n_random: Shifted masks per image.
        seed: Seed of the shifts.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Returns:
        Per image, the drop with the salient voxels filled and the mean drop with a shifted mask filled; compare
        them with a paired test (e.g. ``scipy.stats.wilcoxon(top - shifted, alternative="greater")``).

    Raises:
        InvalidArgumentError: One class index per image is not given.
    """
    if len(class_indices) != len(x):
        raise InvalidArgumentError(f"{len(x)} images need {len(x)} class indices, got {len(class_indices)}")
    layer = layer or target_layer(model, x[:1])
    rng = np.random.default_rng(seed)
    drops = []
    for xi, cls in zip(x, class_indices, strict=True):
        xi = xi[None]
        m = saliency_map(model, xi, method=method, class_index=int(cls), layer=layer, activation=activation)
        drops.append(occlusion_drop(model, xi, m, class_index=int(cls), fraction=fraction, rng=rng,
                                    n_random=n_random, activation=activation))
    top, shifted = np.array(drops).T
    return top, shifted
