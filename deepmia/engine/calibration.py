"""Temperature scaling (Guo et al., ICML 2017): one scalar ``T`` divides the logits, fitted on validation data.

It changes confidence, never the ranking of cases, so AUROC and argmax decisions are unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.errors import InvalidArgumentError

__all__ = ["fit_temperature", "apply_temperature", "probabilities"]


def _nll(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def fit_temperature(logits: Any, labels: Any, *, multi_label: bool = False) -> float:
    """The temperature ``T > 0`` minimising the negative log-likelihood of ``softmax(logits / T)``.

    Args:
        logits: ``(N, K)`` validation logits.
        labels: ``(N,)`` class indices, or ``(N, K)`` 0/1 for multi-label (sigmoid per class).
        multi_label: Fit sigmoid rather than softmax probabilities.

    Returns:
        ``T`` (``1.0`` leaves the model unchanged; ``T > 1`` softens over-confident predictions).

    Raises:
        InvalidArgumentError: Shapes disagree or there are no cases.
    """
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels)).long()
    if z.ndim != 2 or z.shape[0] == 0 or y.shape[0] != z.shape[0]:
        raise InvalidArgumentError(f"fit_temperature needs (N, K) logits and N labels, got {tuple(z.shape)} and "
                                   f"{tuple(y.shape)}")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z / log_t.exp(), y, multi_label)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    # A degenerate optimum (perfectly separated validation data) drives T to 0; keep it in a sane range.
    return float(np.clip(t, 0.05, 20.0))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``logits / temperature`` as float64."""
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature}")
    return np.asarray(logits, dtype=np.float64) / temperature


def probabilities(logits: Any, *, temperature: float = 1.0, multi_label: bool = False) -> np.ndarray:
    """Softmax (or, for multi-label, sigmoid) probabilities of ``logits / temperature`` along the last axis."""
    z = apply_temperature(logits, temperature)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
