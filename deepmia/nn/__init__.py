"""Network and loss registries over MONAI: components register by name where they are defined; plans build by name.

Example:
    >>> from deepmia.nn import build_network
    >>> net = build_network("dynunet", spatial_dims=2, in_channels=1, out_channels=3,
    ...                     filters=[8, 16, 32], strides=[1, 2, 2], kernels=[3, 3, 3])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from deepmia.errors import InvalidArgumentError
from deepmia.registry import Registry

__all__ = ["networks", "losses", "build_network", "build_loss"]

networks: Registry[Callable[..., Any]] = Registry("network")
losses: Registry[Callable[..., Any]] = Registry("loss")

# Modules that register networks and losses: a fixed list, imported on first use (torch is heavy).
_MODULES = ("segmentation", "classification", "registration", "detection")
_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for name in _MODULES:
        try:
            importlib.import_module(f"deepmia.nn.{name}")
        except ModuleNotFoundError as exc:
            # A family not yet written is simply absent; a missing dependency inside one is not.
            if exc.name != f"deepmia.nn.{name}":
                raise
    _loaded = True


def _build(registry: Registry[Callable[..., Any]], name: str, params: dict[str, Any]) -> Any:
    _load()
    factory = registry.get(name)
    try:
        return factory(**params)
    except TypeError as exc:
        raise InvalidArgumentError(f"{registry.kind} {name!r}: {exc}") from exc


def build_network(name: str, **params: Any) -> Any:
    """Build the network registered as ``name`` with its keyword parameters.

    Raises:
        InvalidArgumentError: Unknown name (the message lists the valid ones) or bad parameters.
    """
    return _build(networks, name, params)


def build_loss(name: str, **params: Any) -> Any:
    """Build the loss registered as ``name`` with its keyword parameters.

    Raises:
        InvalidArgumentError: Unknown name (the message lists the valid ones) or bad parameters.
    """
    return _build(losses, name, params)


def network_names() -> list[str]:
    """Names of every registered network."""
    _load()
    return networks.names()
