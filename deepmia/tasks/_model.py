"""Model-directory helpers shared by every task: trained folds, weight loading onto a device."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError
from deepmia.tasks._base import TASKS

__all__ = ["available_folds", "resolve_folds", "load_fold_models"]


def available_folds(model_dir: str | os.PathLike[str]) -> list[int]:
    """Folds with trained weights (``fold_<k>/model_best.pt``) in a model directory, sorted."""
    return sorted(int(p.parent.name.split("_")[1]) for p in Path(model_dir).glob("fold_*/model_best.pt"))


def resolve_folds(model_dir: str | os.PathLike[str], folds: Sequence[int] | None, *, task: str) -> list[int]:
    """The folds to use: ``folds`` (each must be trained) or every trained fold.

    Raises:
        InvalidArgumentError: No trained fold, or a requested fold without weights.
    """
    found = available_folds(model_dir)
    chosen = list(folds) if folds is not None else found
    missing = sorted(set(chosen) - set(found))
    if not chosen or missing:
        raise InvalidArgumentError(
            f"no trained weights for fold(s) {missing or 'any'} (found {found})",
            path=model_dir,
            fix=f"train them with `{TASKS.get(task).train_command}`",
        )
    return chosen


def load_fold_models(
    model_dir: str | os.PathLike[str], folds: Sequence[int], build: Callable[[], Any], *, device: Any = "cpu"
) -> list[Any]:
    """Build one network per fold, load its float32 weights and move it to ``device`` in eval mode."""
    import torch

    models = []
    for k in folds:
        net = build()
        state = torch.load(Path(model_dir) / f"fold_{k}" / "model_best.pt", map_location="cpu", weights_only=True)
        net.load_state_dict({n: v.float() for n, v in state.items()})
        models.append(net.to(device).eval())
    return models
