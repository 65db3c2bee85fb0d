"""The inputs of a batch run: a folder (as ``deepmia predict`` finds them), a dataset, or a catalog query.

A catalog query is ``key=value`` words, e.g. ``"modality=MR"`` or ``"study=1.2.3 modality=CT"`` (keys:
``modality``, ``study``, ``series``); each matching series with present images is one input, named by its
SeriesInstanceUID, read from the files the catalog lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepmia.engine.batch import InputItem, discover_inputs
from deepmia.errors import InvalidArgumentError

__all__ = ["resolve_inputs", "QUERY_KEYS"]

QUERY_KEYS = ("modality", "study", "series")


def resolve_inputs(source: str, db: str | None = None) -> tuple[list[InputItem], list[tuple[str, str]], str]:
    """The inputs named by ``source``, the entries that are not inputs (with the reason) and the kind of source.

    Args:
        source: A folder or file (every input :func:`~deepmia.engine.batch.discover_inputs` finds), a dataset
            folder (one input per case, its first image), or a catalog query (``"modality=MR"``).
        db: The catalog for a query (SQLite path or URL; ``None``: the default catalog file).

    Raises:
        InvalidArgumentError: Neither an existing path nor a query; a query key that does not exist; a query or
            folder that finds no input; two inputs with the same output name.
    """
    path = Path(source)
    if path.is_dir() and (path / "dataset.json").is_file():
        items, skipped, kind = *_dataset_inputs(path), "dataset"
    elif path.exists():
        items, skipped = discover_inputs(path)
        kind = "folder"
    elif "=" in source:
        items, skipped, kind = _catalog_inputs(source, db), [], "catalog"
    else:
        raise InvalidArgumentError("no such file or folder, nor a catalog query like \"modality=MR\"", path=source)
    seen: dict[str, Path] = {}
    for item in items:
        if item.name in seen:
            raise InvalidArgumentError(
                f"two inputs have the output name {item.name!r} ({seen[item.name]} and {item.path})", path=source,
                fix="give inputs distinct file names (outputs are named after them)")
        seen[item.name] = item.path
    return items, skipped, kind


def _dataset_inputs(root: Path) -> tuple[list[InputItem], list[tuple[str, str]]]:
    from deepmia.data.dataset import Dataset

    dataset = Dataset.load(root)
    items, skipped = [], []
    for case in dataset.cases:
        if len(case.images) != 1:
            skipped.append((case.id, f"{len(case.images)} channel files: batch predict reads one image per case"))
            continue
        file = dataset.path(case.images[0])
        items.append(InputItem(file, file.name))
    if not items:
        raise InvalidArgumentError("the dataset has no single-image case", path=root)
    return items, skipped


def parse_query(query: str) -> dict[str, str]:
    """``"modality=MR study=1.2"`` as a dict; refuses unknown keys and words that are not ``key=value``."""
    terms: dict[str, str] = {}
    for word in query.split():
        key, eq, value = word.partition("=")
        if not eq or not value or key not in QUERY_KEYS:
            raise InvalidArgumentError(f"catalog query term {word!r} is not KEY=VALUE with KEY one of "
                                       f"{', '.join(QUERY_KEYS)}", fix='e.g. --input "modality=MR"')
        terms[key] = value
    return terms


def _catalog_inputs(query: str, db: str | None) -> list[InputItem]:
    from sqlalchemy import select

    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import Instance, Series

    terms = parse_query(query)
    with open_catalog(db) as catalog:
        found = catalog.series(study_uid=terms.get("study"), modality=terms.get("modality"))
        if "series" in terms:
            found = [s for s in found if s["series_uid"] == terms["series"]]
        items = []
        with catalog.session() as s:
            for row in found:
                files: list[Any] = list(s.scalars(
                    select(Instance.path).join(Instance.series)
                    .where(Series.series_uid == row["series_uid"], Instance.missing_since.is_(None))
                    .order_by(Instance.instance_number, Instance.path)))
                paths = [Path(f) for f in files]
                items.append(InputItem(paths[0].parent, row["series_uid"], row["series_uid"], paths))
    if not items:
        raise InvalidArgumentError(f"no series in the catalog matches {query!r}", path=db or "the default catalog",
                                   fix="see `deepmia catalog series`")
    return items
