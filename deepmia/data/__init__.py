"""Datasets: the on-disk layout (``dataset.json``), importers, patient-level splits and the fingerprint.

Names load lazily so ``import deepmia.data`` stays light.

Example:
    >>> from deepmia.data import Dataset, make_splits, fingerprint   # doctest: +SKIP
    >>> ds = Dataset.load("datasets/hippocampus")                     # doctest: +SKIP
    >>> ds.set_splits(make_splits(ds, folds=5)); ds.save()            # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Dataset": "deepmia.data.dataset",
    "DatasetSpec": "deepmia.data.dataset",
    "Case": "deepmia.data.dataset",
    "Channel": "deepmia.data.dataset",
    "Box": "deepmia.data.dataset",
    "Fold": "deepmia.data.dataset",
    "Splits": "deepmia.data.dataset",
    "check_leakage": "deepmia.data.dataset",
    "ImportReport": "deepmia.data.importers",
    "import_dataset": "deepmia.data.importers",
    "importers": "deepmia.data.importers",
    "make_splits": "deepmia.data.splits",
    "fingerprint": "deepmia.data.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepmia.data' has no attribute {name!r}")
