"""The pieces every model-card section uses.

The card's context (the model directory's JSON files), a task's sections, and the interval and key-value
formatters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CardContext", "Sections", "ci", "kv"]


@dataclass
class CardContext:
    """Everything a card section may read: the model directory's JSON files as plain dictionaries.

    Attributes:
        model_dir: The model directory.
        task: ``classify``, ``segment``, ``detect`` or ``register``.
        plan: ``plan.json``.
        metrics: ``metrics.json`` (empty when absent).
        split: ``split.json`` (empty when absent).
        dataset: ``{"name", "license", "source", "description"}`` of the training data.
        notes: Hand-written markdown per section title (``card_notes.json``).
    """

    model_dir: Path
    task: str
    plan: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_name(self) -> str:
        """The training data's name (the plan's dataset when no dataset information was given)."""
        return str(self.dataset.get("name") or self.plan.get("dataset") or self.model_dir.name)


@dataclass
class Sections:
    """A task's contribution to its card: a title, summary paragraphs and lines per section title."""

    title: str
    summary: list[str]
    body: dict[str, list[str]] = field(default_factory=dict)


def ci(summary: Mapping[str, Any] | None, digits: int = 3) -> str:
    """An interval as `` [low, high]`` from any of the shapes the metrics use (empty when there is none).

    Example:
        >>> ci({"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6})
        ' [0.400, 0.600]'
        >>> ci({"estimate": 0.5, "low": 0.41, "high": 0.62}, 2)
        ' [0.41, 0.62]'
        >>> ci(None)
        ''
    """
    if not summary:
        return ""
    for low, high in (("ci_low", "ci_high"), ("low", "high")):
        if summary.get(low) is not None and summary.get(high) is not None:
            return f" [{summary[low]:.{digits}f}, {summary[high]:.{digits}f}]"
    return ""


def kv(mapping: Mapping[str, Any] | None) -> str:
    """A flat mapping as ``key value, key value`` for prose.

    Example:
        >>> kv({"depth": 18, "small_input": True})
        'depth 18, small input True'
    """
    if not mapping:
        return "none"
    return ", ".join(f"{str(k).replace('_', ' ')} {v}" for k, v in mapping.items())
