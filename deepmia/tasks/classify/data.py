"""Classification inputs: images to network arrays, batch augmentation, and the clinical table encoder.

Classification images are small enough to hold every case in memory at the planned input size
(``N x C x size`` float32; 5,000 chest X-rays at 28 px take 16 MB, 1,000 volumes at 64^3 take 1 GB).
Augmentation runs on whole batches with one ``grid_sample`` call.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.image import Image
from deepmia.tasks.classify.plan import Augmentation, ClassifyPlan, TabularSpec
from deepmia.transforms import RandomAffine, RandomCompose, RandomIntensity, RandomMirror, apply_batch

__all__ = [
    "check_image",
    "to_network_input",
    "load_cases",
    "labels_of",
    "augment",
    "batches",
    "read_table",
    "fit_table",
    "encode_table",
    "check_table_columns",
]


def check_image(image: Image, plan: ClassifyPlan, *, path: Any = None) -> None:
    """Refuse an image whose dimensionality or channel count differs from the model's.

    Raises:
        InvalidArgumentError: Wrong number of spatial dimensions or channels (the message gives both).
    """
    if image.spatial_dims != plan.spatial_dims:
        raise InvalidArgumentError(
            f"a {image.spatial_dims}D image {image.spatial_shape}, but the model takes {plan.spatial_dims}D images",
            path=path, fix=f"give {plan.spatial_dims}D images like those it was trained on",
        )
    if image.num_channels != len(plan.channels):
        raise InvalidArgumentError(
            f"{image.num_channels} channel(s), but the model takes {len(plan.channels)} ({', '.join(plan.channels)})",
            path=path, fix="convert the image to the model's channels (e.g. greyscale) first",
        )


def to_network_input(image: Image, plan: ClassifyPlan, *, path: Any = None) -> np.ndarray:
    """An image as the network sees it: resized to ``plan.input_size``, clipped and standardised, float32.

    Raises:
        InvalidArgumentError: The image's dimensionality or channels differ from the plan's.
    """
    check_image(image, plan, path=path)
    x = torch.from_numpy(np.ascontiguousarray(image.array, dtype=np.float32))[None]
    if list(x.shape[2:]) != list(plan.input_size):
        mode = "bilinear" if plan.spatial_dims == 2 else "trilinear"
        smaller = all(t <= s for t, s in zip(plan.input_size, x.shape[2:], strict=True))
        x = F.interpolate(x, size=plan.input_size, mode=mode, align_corners=False, antialias=smaller
                          and plan.spatial_dims == 2)
    a = x[0].numpy()
    norm = plan.normalization
    out = np.empty_like(a)
    for c in range(a.shape[0]):
        v = a[c]
        if norm.clip is not None:
            v = np.clip(v, *norm.clip[c])
        out[c] = (v - norm.mean[c]) / norm.std[c]
    return out


def load_cases(dataset: Dataset, case_ids: Sequence[str], plan: ClassifyPlan) -> np.ndarray:
    """Network inputs of the given cases, stacked ``(N, C, *input_size)``."""
    return np.stack([
        to_network_input(dataset.read_image(cid), plan, path=dataset.path(dataset.case(cid).images[0]))
        for cid in case_ids
    ])


def labels_of(dataset: Dataset, case_ids: Sequence[str], plan: ClassifyPlan) -> np.ndarray:
    """Class indices ``(N,)``, or a 0/1 matrix ``(N, K)`` for multi-label plans."""
    if plan.multi_label:
        out = np.zeros((len(case_ids), plan.num_outputs), dtype=np.int64)
        for i, cid in enumerate(case_ids):
            out[i, dataset.case(cid).classes] = 1
        return out
    return np.array([dataset.case(cid).classes[0] for cid in case_ids], dtype=np.int64)


def _augmentation(aug: Augmentation) -> RandomCompose:
    """The plan's random augmentation: rotation, zoom and shift (border padding), mirrors, intensity."""
    return RandomCompose([
        RandomAffine(degrees=aug.rotate_deg, scale=(1 - aug.scale, 1 + aug.scale), translate=aug.translate,
                     padding="border"),
        RandomMirror(aug.mirror_axes, p=0.5),
        RandomIntensity(scale=(1 - aug.intensity_scale, 1 + aug.intensity_scale),
                        shift=(-aug.intensity_shift, aug.intensity_shift)),
    ])


def augment(
    x: torch.Tensor, aug: Augmentation, *, generator: torch.Generator | np.random.Generator
) -> torch.Tensor:
    """Randomly rotate, scale, translate, mirror and rescale intensities of a batch ``(B, C, *spatial)``.

    Parameters are drawn per sample from a NumPy generator (a torch ``generator`` seeds one with a single draw,
    so a seeded stream replays) and applied over the batch (:func:`deepmia.transforms.apply_batch`).
    """
    if isinstance(generator, torch.Generator):
        generator = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    random = _augmentation(aug)
    drawn = random.sample_many(generator, x.shape[2:], x.shape[0])
    return apply_batch(drawn, x)[0]


def batches(
    images: np.ndarray, labels: np.ndarray, plan: ClassifyPlan, *, seed: int, tabular: np.ndarray | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Augmented training batches forever: each epoch a fresh permutation; the last partial batch is dropped.

    Yields:
        ``(images, labels)`` or ``(images, labels, tabular)`` tensors.
    """
    generator = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    t_all = None if tabular is None else torch.from_numpy(tabular)
    bs = min(plan.schedule.batch_size, len(images))
    while True:
        perm = torch.randperm(len(images), generator=generator)
        for i in range(len(images) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            x = augment(x_all[idx], plan.augmentation, generator=generator)
            yield (x, y_all[idx]) if t_all is None else (x, y_all[idx], t_all[idx])


# --------------------------------------------------------------------------------------- clinical table
def read_table(path: str | Path, *, id_column: str = "case_id") -> dict[str, dict[str, str]]:
    """Read a clinical CSV into ``{case id: {column: value}}`` (values as text; empty means missing).

    Raises:
        DatasetError: The file is missing, has no ``id_column``, or repeats a case id.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if id_column not in fields:
                raise DatasetError(f"no {id_column!r} column; columns are {fields}", path=path,
                                   fix=f"name the case-id column {id_column!r}")
            rows: dict[str, dict[str, str]] = {}
            for row in reader:
                cid = (row.pop(id_column) or "").strip()
                if cid in rows:
                    raise DatasetError(f"case id {cid!r} appears twice", path=path)
                rows[cid] = {k: (v or "").strip() for k, v in row.items() if k is not None}
    except FileNotFoundError:
        raise DatasetError("clinical table not found", path=path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"not a readable CSV: {exc}", path=path) from exc
    return rows


MISSING = {"", "na", "nan", "n/a", "none", "null", "?"}


def _number(text: str) -> float | None:
    if text.lower() in MISSING:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def fit_table(
    rows: Mapping[str, Mapping[str, str]], train_ids: Sequence[str], *, columns: Sequence[str] | None = None,
    id_column: str = "case_id", path: Any = None,
) -> TabularSpec:
    """Choose the encoding of each column from the training cases.

    A column is numeric when every present value parses as a number, categorical otherwise.

    Args:
        rows: The table (:func:`read_table`).
        train_ids: Training case ids (statistics come from these rows only).
        columns: Columns to use (default: every column except the id).
        id_column: Name of the case-id column.
        path: The CSV, for error messages.

    Raises:
        DatasetError: A requested column is not in the table, or a column has no value in any training case.
    """
    available = sorted({k for r in rows.values() for k in r})
    use = list(columns) if columns else available
    unknown = [c for c in use if c not in available]
    if unknown:
        raise DatasetError(f"unknown clinical column(s) {unknown}; the table has {available}", path=path)
    numeric: dict[str, tuple[float, float]] = {}
    categorical: dict[str, list[str]] = {}
    for col in use:
        values = [rows[c].get(col, "") for c in train_ids if c in rows]
        present = [v for v in values if v.lower() not in MISSING]
        if not present:
            raise DatasetError(f"column {col!r} has no value in any training case", path=path,
                               fix="drop the column")
        nums = [_number(v) for v in present]
        if all(n is not None for n in nums):
            a = np.asarray(nums, dtype=float)
            numeric[col] = (float(a.mean()), float(a.std()) or 1.0)
        else:
            categorical[col] = sorted(set(present))
    return TabularSpec(id_column=id_column, numeric=numeric, categorical=categorical)


def check_table_columns(
    columns: Iterable[str], spec: TabularSpec, *, path: Any = None, extra_ok: bool = False,
) -> None:
    """Refuse a table whose columns differ from those the model was trained with.

    Args:
        columns: The table's columns (without the id column).
        spec: The model's table encoding.
        path: The CSV, for error messages.
        extra_ok: Allow columns the model does not use (training reads a chosen subset of a wider table).

    Raises:
        DatasetError: Columns the model uses are missing, or (unless ``extra_ok``) the table has others.
    """
    have = set(columns)
    missing = [c for c in spec.columns if c not in have]
    unknown = [] if extra_ok else sorted(have - set(spec.columns))
    if not missing and not unknown:
        return
    problems = ([f"lacks column(s) {missing} the model was trained with"] if missing else []) + (
        [f"has unknown clinical column(s) {unknown} the model was not trained with"] if unknown else [])
    raise DatasetError(f"the clinical table {' and '.join(problems)}; the model uses {spec.columns}", path=path,
                       fix=f"give exactly the columns {[spec.id_column, *spec.columns]}")


def encode_table(
    rows: Mapping[str, Mapping[str, str]], case_ids: Sequence[str], spec: TabularSpec, *, path: Any = None,
) -> np.ndarray:
    """Encode the rows of ``case_ids`` as ``(N, spec.width)`` float32 features.

    Raises:
        DatasetError: A case has no row in the table, or the table lacks a column the model uses.
    """
    missing_rows = [c for c in case_ids if c not in rows]
    if missing_rows:
        shown = ", ".join(missing_rows[:5]) + (f" and {len(missing_rows) - 5} more" if len(missing_rows) > 5 else "")
        raise DatasetError(f"{len(missing_rows)} case(s) have no row in the clinical table: {shown}", path=path,
                           fix=f"add rows with these {spec.id_column!r} values (empty cells are missing values)")
    check_table_columns({k for c in case_ids for k in rows[c]}, spec, path=path, extra_ok=True)
    out = np.zeros((len(case_ids), spec.width), dtype=np.float32)
    for i, cid in enumerate(case_ids):
        row, j = rows[cid], 0
        for col, (mean, std) in spec.numeric.items():
            text = row.get(col, "")
            v = _number(text)
            if v is None and text.lower() not in MISSING:
                raise DatasetError(f"case {cid!r}: column {col!r} holds {text!r}, but the model takes a number there",
                                   path=path, fix="give a number, or leave the cell empty for a missing value")
            if v is None:
                out[i, j + 1] = 1.0
            else:
                out[i, j] = (v - mean) / std
            j += 2
        for col, cats in spec.categorical.items():
            v = row.get(col, "")
            out[i, j + (cats.index(v) if v in cats else len(cats))] = 1.0
            j += len(cats) + 1
    return out
