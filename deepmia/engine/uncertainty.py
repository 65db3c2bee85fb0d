"""Sampling a classifier's predictions to measure how sure it is: ensembles, test-time augmentation, MC dropout.

A *sample* is one set of logits for every case: one per ensemble member x mirror (TTA) x dropout pass.
The prediction is the mean of the samples' logits; the uncertainty is the standard deviation, across samples,
of the (calibrated) probability of the predicted class (0 when every sample agrees).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from deepmia.engine.calibration import probabilities
from deepmia.errors import InvalidArgumentError

__all__ = ["mirror_sets", "mc_dropout", "sample_logits", "summarise_samples"]


def mirror_sets(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Test-time mirrors: no mirror, then each axis alone (``2 + ... `` passes, not all ``2**n`` combinations)."""
    return [(), *[(a,) for a in mirror_axes]]


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[None]:
    """Keep dropout layers sampling (train mode) while every other layer (batch norm) stays in eval mode."""
    was = model.training
    model.eval()
    drops = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    for m in drops:
        m.train()
    try:
        yield
    finally:
        model.train(was)


def sample_logits(
    models: Sequence[nn.Module],
    run: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor],
    x: torch.Tensor,
    tabular: torch.Tensor | None = None,
    *,
    mirror_axes: Sequence[int] = (),
    mc_samples: int = 0,
) -> np.ndarray:
    """Logit samples ``(S, B, K)`` of a batch over members x mirrors x (1 or ``mc_samples``) dropout passes.

    Args:
        models: Ensemble members (in eval mode).
        run: ``(model, images, tabular) -> logits``.
        x: Network inputs ``(B, C, *spatial)``.
        tabular: Encoded clinical features ``(B, T)`` or None.
        mirror_axes: Spatial axes mirrored for test-time augmentation.
        mc_samples: Dropout passes per member and mirror (0: dropout off, one deterministic pass).

    Raises:
        InvalidArgumentError: ``models`` is empty (no member to sample).
    """
    if not models:
        raise InvalidArgumentError("sample_logits needs at least one ensemble member, got none",
                                   fix="select members that exist (e.g. out-of-fold subsets naming trained members)")
    out = []
    with torch.no_grad():
        for model, flips in itertools.product(models, mirror_sets(mirror_axes)):
            xi = torch.flip(x, [a + 2 for a in flips]) if flips else x
            if mc_samples:
                with mc_dropout(model):
                    out.extend(run(model, xi, tabular).float().numpy() for _ in range(mc_samples))
            else:
                out.append(run(model, xi, tabular).float().numpy())
    return np.stack(out)


def summarise_samples(
    samples: np.ndarray, *, temperature: float = 1.0, multi_label: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean logits, calibrated probabilities and uncertainty from logit samples ``(S, N, K)``.

    Returns:
        ``(logits (N, K), probabilities (N, K), uncertainty (N,))``; for multi-label data the uncertainty is the
        largest standard deviation over labels.
    """
    logits = samples.mean(axis=0)
    prob = probabilities(logits, temperature=temperature, multi_label=multi_label)
    per_sample = probabilities(samples, temperature=temperature, multi_label=multi_label)
    if multi_label:
        unc = per_sample.std(axis=0).max(axis=1)
    else:
        top = prob.argmax(axis=1)
        unc = per_sample[:, np.arange(prob.shape[0]), top].std(axis=0)
    return logits, prob, unc
