"""Shared pieces of the dataset importers: the registry, the report, and file helpers (no importer here).

Importer modules (:mod:`deepmia.data.importers`, :mod:`deepmia.data.pairs`, :mod:`deepmia.data.folder`,
:mod:`deepmia.data.medmnist`) import from this module only, so they never import each other in a loop.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmia.data.dataset import Channel, Dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.registry import Registry

__all__ = ["ImportReport", "importers", "Progress", "Writer", "full_suffix", "file_stem",
           "require_dir", "channels_from", "save_dataset", "parse_label_names"]

Progress = Callable[[int, int], None]



@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        dataset: The imported dataset (already saved).
        skipped: ``(item, reason)`` for each source item that was not imported.
        notes: Other things the user should know (clipped boxes, ignored folders, ...).
    """

    dataset: Dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain data for ``deepmia dataset import --json``."""
        ds = self.dataset
        splits = ds.splits
        return {
            "dataset": str(ds.root),
            "name": ds.name,
            "task": ds.task,
            "cases": len(ds),
            "patients": len(ds.patients),
            "splits": None
            if splits is None
            else {"folds": len(splits.folds), "test": len(splits.test)},
            "skipped": [{"item": item, "reason": reason} for item, reason in self.skipped],
            "notes": list(self.notes),
        }


importers: Registry[Callable[..., ImportReport]] = Registry("dataset format")


class Writer:
    """Places files into the new dataset folder (copy or absolute symlink)."""

    def __init__(self, dst: Path, *, link: bool) -> None:
        if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
            raise DatasetError("destination exists and is not an empty folder", path=dst, fix="choose a new folder")
        dst.mkdir(parents=True, exist_ok=True)
        self.root = dst
        self.link = link

    def put(self, src: Path, rel: str) -> str:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.link:
            target.symlink_to(src.resolve())
        else:
            shutil.copy2(src, target)
        return rel


def full_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def file_stem(path: Path) -> str:
    suffix = full_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} folder not found", path=path)
    return path


def channels_from(
    channels: Sequence[Channel | Mapping[str, Any] | str] | None, default: Sequence[Channel],
) -> list[Channel]:
    """Channels from ``Channel``s, dicts or ``"NAME:MODALITY"`` strings."""
    if not channels:
        return list(default)
    out = []
    for c in channels:
        if isinstance(c, str):
            name, _, modality = c.partition(":")
            out.append(Channel(name=name, modality=modality or "OT"))
        else:
            out.append(c if isinstance(c, Channel) else Channel.model_validate(dict(c)))
    return out


def save_dataset(dataset: Dataset) -> Dataset:
    dataset.save()
    dataset.check_files()
    return dataset


def parse_label_names(labels: Mapping[str, str] | Sequence[str] | str | None) -> dict[str, str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        out = {}
        for part in labels.split(","):
            value, sep, name = part.partition("=")
            if not sep or not value.strip().lstrip("-").isdigit():
                raise InvalidArgumentError(f"labels {labels!r}: write them as '0=background,1=liver'")
            out[value.strip()] = name.strip()
        return out
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}
    return {str(i): str(n) for i, n in enumerate(labels)}
