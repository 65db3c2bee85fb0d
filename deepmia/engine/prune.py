"""Structured (channel) pruning of a network's weights by the L1 norm of its filters.

A *channel group* is a set of channels that must be kept or removed together: the output channels of one
convolution and everything that reads them (the next convolution's input channels, a normalisation layer's
per-channel parameters), or, in a residual network, the whole residual stream of a stage (every convolution that
adds into it and every layer that reads it). Pruning removes the same fraction ``R`` of every group: the channels
whose writing filters have the smallest summed L1 norm (Li et al., "Pruning Filters for Efficient ConvNets", ICLR
2017). Removing the same fraction everywhere keeps the pruned network in the same family, with every width scaled
by ``1 - R`` (:func:`kept_channels`), so it is built from an ordinary plan and its weights are the original
ones, sliced.

Supported: the basic-block ResNets of :func:`deepmia.nn.classification.resnet` (depth 10, 18, 34) and the
plain-block DynUNets of :func:`deepmia.nn.segmentation.dynunet`, 2D or 3D.

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

__all__ = ["ChannelGroup", "kept_channels", "check_ratio", "resnet_groups", "dynunet_groups", "prune_state_dict",
           "PRUNABLE", "PRUNABLE_SEGMENTATION"]

#: What :func:`resnet_groups` can prune, named in errors.
PRUNABLE = "ResNet classifiers with basic blocks (network 'resnet', depth 10, 18 or 34)"
PRUNABLE_SEGMENTATION = "DynUNet segmentation networks with plain blocks (network 'dynunet')"
_NORM_PARAMS = ("weight", "bias", "running_mean", "running_var")


@dataclass
class ChannelGroup:
    """Channels pruned together.

    Attributes:
        name: A readable name (``stage2``, ``layer2.0.conv1``).
        size: Number of channels.
        writers: Parameters whose dim 0 is this group (convolution weights and biases, norm parameters): a name,
            or ``(name, dim)`` when the output channels are another dim (a transposed convolution's dim 1).
        readers: Parameters whose dim 1 is this group (the input channels of the next layers): a name, or
            ``(name, dim, offset)`` for a layer that reads a concatenation (the group starts at ``offset``).
    """

    name: str
    size: int
    writers: list[str | tuple[str, int]] = field(default_factory=list)
    readers: list[str | tuple[str, int, int]] = field(default_factory=list)
    #: What ranks the channels: the L1 norm of the ``writers``' filters, of the ``readers``' weights on them (for
    #: outputs normalised without an affine scale, whose own filter norm says nothing), or the product (``both``).
    rank_by: str = "writers"

    def slices(self) -> list[tuple[str, int, int]]:
        """Every ``(name, dim, offset)`` this group's channels occupy, writers first."""
        out = [(w, 0, 0) if isinstance(w, str) else (w[0], w[1], 0) for w in self.writers]
        return out + [(r, 1, 0) if isinstance(r, str) else r for r in self.readers]


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


def dynunet_groups(state: Mapping[str, Any]) -> list[ChannelGroup]:
    """The channel groups of a MONAI DynUNet's state dict (plain blocks, no residual connections).

    Every convolution's output channels are one group: read by the next convolution of its block, and an encoder
    stage's output also by the decoder block it is concatenated into (after the transposed convolution's
    channels), a decoder block's output by the next transposed convolution (or the output layer) and by its deep
    supervision head.

    Raises:
        InvalidArgumentError: Not a plain-block DynUNet (residual blocks are not supported).
    """
    if "input_block.conv1.conv.weight" not in state or any(".conv3." in k or ".norm3." in k for k in state):
        raise InvalidArgumentError(f"structured pruning supports only {PRUNABLE} and {PRUNABLE_SEGMENTATION}")
    n_up = len({k.split(".")[1] for k in state if k.startswith("upsamples.")})
    encoder = ["input_block", *[f"downsamples.{i}" for i in range(n_up - 1)], "bottleneck"]

    def out_of(name: str, dim: int = 0) -> int:
        return int(state[f"{name}.conv.weight"].shape[dim])

    def conv(block: str, i: int) -> str:
        return f"{block}.conv{i}.conv.weight"

    groups = []
    for block in [*encoder, *[f"upsamples.{j}.conv_block" for j in range(n_up)]]:
        groups.append(ChannelGroup(f"{block}.conv1", out_of(f"{block}.conv1"), [conv(block, 1)],
                                   [conv(block, 2)]))
    for s, block in enumerate(encoder):
        g = ChannelGroup(f"{block}.conv2", out_of(f"{block}.conv2"), [conv(block, 2)])
        if s < n_up:
            up = f"upsamples.{n_up - 1 - s}"
            g.readers += [conv(encoder[s + 1], 1), (conv(f"{up}.conv_block", 1), 1, out_of(f"{up}.transp_conv", 1))]
        else:
            g.readers.append(("upsamples.0.transp_conv.conv.weight", 0, 0))
        groups.append(g)
    for j in range(n_up):
        up = f"upsamples.{j}"
        groups.append(ChannelGroup(f"{up}.transp_conv", out_of(f"{up}.transp_conv", 1),
                                   [(f"{up}.transp_conv.conv.weight", 1)], [conv(f"{up}.conv_block", 1)]))
        g = ChannelGroup(f"{up}.conv_block.conv2", out_of(f"{up}.conv_block.conv2"), [conv(f"{up}.conv_block", 2)])
        g.readers.append((f"upsamples.{j + 1}.transp_conv.conv.weight", 0, 0) if j + 1 < n_up
                         else "output_block.conv.conv.weight")
        head = f"deep_supervision_heads.{n_up - 2 - j}.conv.conv.weight"
        if head in state:
            g.readers.append(head)
        groups.append(g)
    for g in groups:  # a convolution's bias follows its output channels
        g.writers += [(w if isinstance(w, str) else w[0]).replace(".weight", ".bias") for w in g.writers
                      if (w if isinstance(w, str) else w[0]).replace(".weight", ".bias") in state]
    return groups


def _l1(state: Mapping[str, Any], slices: list[tuple[str, int, int]], size: int) -> Any:
    """Per channel, the summed L1 norm of the weight slices (convolution and linear weights only)."""
    import torch

    total = torch.zeros(size)
    for name, dim, offset in slices:
        w = state[name]
        if w.dim() >= 2:
            total += w.detach().float().abs().narrow(dim, offset, size).movedim(dim, 0).reshape(size, -1).sum(1)
    return total


def _importance(state: Mapping[str, Any], group: ChannelGroup) -> Any:
    """Per channel, the L1 norm of the filters that write it, of the weights that read it, or their product."""
    slices = group.slices()
    writers, readers = slices[:len(group.writers)], slices[len(group.writers):]
    if group.rank_by == "writers":
        return _l1(state, writers, group.size)
    if group.rank_by == "readers":
        return _l1(state, readers, group.size)
    return _l1(state, writers, group.size) * _l1(state, readers, group.size)


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
    masks: dict[tuple[str, int], Any] = {}
    kept: dict[str, list[int]] = {}
    for g in groups:
        order = torch.argsort(_importance(state, g), descending=True, stable=True)
        gone = order[kept_channels(g.size, ratio):]
        kept[g.name] = sorted(order[:kept_channels(g.size, ratio)].tolist())
        for name, dim, offset in g.slices():
            mask = masks.setdefault((name, dim), torch.ones(state[name].shape[dim], dtype=torch.bool))
            mask[gone + offset] = False
    out = {k: v.clone() for k, v in state.items()}
    for (name, dim), mask in masks.items():
        out[name] = out[name].index_select(dim, mask.nonzero().flatten())
    sliced = {state[name].data_ptr(): name for name, _ in masks}
    for key, value in state.items():  # one tensor under two names (MONAI's DynUNet registers blocks twice)
        if key not in {n for n, _ in masks} and value.numel() and value.data_ptr() in sliced:
            out[key] = out[sliced[value.data_ptr()]]
    return out, kept
