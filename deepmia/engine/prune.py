"""Structured (channel) pruning of a network's weights by the L1 norm of its filters.

A *channel group* is a set of channels that must be kept or removed together: the output channels of one
convolution and everything that reads them (the next convolution's input channels, a normalisation layer's
per-channel parameters), or, in a residual network, the whole residual stream of a stage (every convolution that
adds into it and every layer that reads it). Pruning removes the same fraction ``R`` of every group: the channels
whose writing filters have the smallest summed L1 norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR
2017). Removing the same fraction everywhere keeps the pruned network in the same family, with every width scaled
by ``1 - R`` (:func:`kept_channels`), so it is built from an ordinary plan and its weights are the original
ones, sliced.

Supported: the basic-block ResNets of :func:`deepmia.nn.classification.resnet` (depth 10, 18, 34), 2D or 3D.

Example:
    >>> kept_channels(64, 0.5)
    32
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepmia.errors import InvalidArgumentError

__all__ = ["ChannelGroup", "kept_channels", "check_ratio", "resnet_groups", "prune_state_dict", "PRUNABLE"]

#: What :func:`resnet_groups` can prune, named in errors.
PRUNABLE = "ResNet classifiers with basic blocks (network 'resnet', depth 10, 18 or 34)"
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class ChannelGroup:
    """Channels pruned together.

    Attributes:
        name: A readable name (``stage2``, ``layer2.0.conv1``).
        size: Number of channels.
        writers: Parameter names whose dim 0 is this group (convolution weights and biases, norm parameters).
        readers: Parameter names whose dim 1 is this group (the input channels of the next layers).
    """

    name: str
    size: int
    writers: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)


def check_ratio(ratio: float) -> float:
    """``ratio`` as a float in ``(0, 1)``.

    Raises:
        InvalidArgumentError: Outside ``(0, 1)`` (0 prunes nothing, 1 would remove every channel).
    """
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise InvalidArgumentError(f"prune ratio {ratio} is not between 0 and 1 (exclusive)",
                                   fix="give the fraction of channels to remove, e.g. --prune 0.5")
    return ratio


def kept_channels(size: int, ratio: float) -> int:
    """Channels left when the fraction ``ratio`` of ``size`` is removed (rounded, at least one)."""
    return max(1, size - int(round(size * ratio)))


def _norm_of(prefix: str) -> list[str]:
    return [f"{prefix}.{p}" for p in _NORM_PARAMS]


def resnet_groups(
    state: Mapping[str, Any], *, prefix: str = "backbone.", head: str = "head.weight",
) -> list[ChannelGroup]:
    """The channel groups of a basic-block ResNet's state dict (MONAI's parameter names).

    One group per block's inner convolution (``conv1`` -> ``bn1`` -> ``conv2``'s input) and one per stage's
    residual stream (the stem or the stage's downsampling convolution, every block's ``conv2``/``bn2``, every
    block's input and the next stage's input or the linear head).

    Raises:
        InvalidArgumentError: Not a basic-block ResNet (e.g. bottlenecks: ``conv3`` present).
    """
    if any(k.endswith("conv3.weight") for k in state) or f"{prefix}conv1.weight" not in state:
        raise InvalidArgumentError(f"structured pruning supports only {PRUNABLE}")
    blocks: dict[int, list[int]] = {}
    for key in state:
        m = re.match(rf"{re.escape(prefix)}layer(\d)\.(\d+)\.conv1\.weight$", key)
        if m:
            blocks.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    stem = ChannelGroup("stem", int(state[f"{prefix}conv1.weight"].shape[0]),
                        writers=[f"{prefix}conv1.weight", *_norm_of(f"{prefix}bn1")])
    groups, stream = [], stem
    for layer in sorted(blocks):
        for b in sorted(blocks[layer]):
            block = f"{prefix}layer{layer}.{b}"
            down = f"{block}.downsample.0.weight"
            if down in state:  # a new stream starts here: the block's input is the previous one
                stream.readers += [down, f"{block}.conv1.weight"]
                groups.append(stream)
                stream = ChannelGroup(f"stage{layer}", int(state[down].shape[0]),
                                      writers=[down, f"{block}.downsample.0.bias", *_norm_of(f"{block}.downsample.1")])
            else:
                stream.readers.append(f"{block}.conv1.weight")
            inner = ChannelGroup(f"layer{layer}.{b}.conv1", int(state[f"{block}.conv1.weight"].shape[0]),
                                 writers=[f"{block}.conv1.weight", *_norm_of(f"{block}.bn1")],
                                 readers=[f"{block}.conv2.weight"])
            groups.append(inner)
            stream.writers += [f"{block}.conv2.weight", *_norm_of(f"{block}.bn2")]
    stream.readers.append(head)
    groups.append(stream)
    for g in groups:  # parameters a network lacks (a convolution without bias) are left out
        g.writers = [w for w in g.writers if w in state]
    return groups


def _importance(state: Mapping[str, Any], group: ChannelGroup) -> Any:
    """Per channel, the summed L1 norm of the filters (convolution weights) that write it."""
    import torch

    total = torch.zeros(group.size)
    for name in group.writers:
        w = state[name]
        if w.dim() >= 2:
            total += w.detach().float().abs().reshape(w.shape[0], -1).sum(1)
    return total


def prune_state_dict(
    state: Mapping[str, Any], groups: list[ChannelGroup], ratio: float,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Remove the fraction ``ratio`` of each group's channels (the smallest L1 norms) from a state dict.

    Returns:
        The sliced state dict and, per group name, the kept channel indices (ascending).

    Raises:
        InvalidArgumentError: ``ratio`` outside ``(0, 1)``.
    """
    import torch

    ratio = check_ratio(ratio)
    out = {k: v.clone() for k, v in state.items()}
    kept: dict[str, list[int]] = {}
    for g in groups:
        n = kept_channels(g.size, ratio)
        order = torch.argsort(_importance(state, g), descending=True, stable=True)
        idx = torch.sort(order[:n]).values
        kept[g.name] = idx.tolist()
        for name in g.writers:
            out[name] = out[name].index_select(0, idx)
        for name in g.readers:
            out[name] = out[name].index_select(1, idx)
    return out, kept
