"""The dataset folder: ``dataset.json`` (validated with pydantic), the files it names, and optional splits.

A dataset is a folder::

    DATASET/
      dataset.json        name, task, channels, labels, cases (and optionally splits)
      splits.json         optional; {"folds": [{"train": [...], "val": [...]}, ...], "test": [...]}
      images/ labels/     the files, at the relative paths the cases name

Every later stage (planning, training, evaluation) is built from this folder. See ``docs/dataset.md``.

Example:
    >>> from deepmia.data import Dataset             # doctest: +SKIP
    >>> ds = Dataset.load("data/hippocampus")         # doctest: +SKIP
    >>> image = ds.read_image(ds.cases[0])            # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepmia.errors import DatasetError, SplitLeakageError
from deepmia.image import Image

__all__ = [
    "TASKS",
    "Task",
    "Channel",
    "Box",
    "Case",
    "Fold",
    "Splits",
    "DatasetSpec",
    "Dataset",
    "check_leakage",
    "format_validation_error",
]

DATASET_FILE = "dataset.json"
SPLITS_FILE = "splits.json"
FORMAT_VERSION = 1

Task = Literal[
    "segmentation", "classification", "detection", "registration", "retrieval", "generation", "forensics", "unlabeled"
]
TASKS: tuple[str, ...] = Task.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Channel(_Model):
    """One input channel: its name (``"T1"``, ``"CT"``, ``"RGB"``) and DICOM modality code (``"MR"``, ``"CT"``)."""

    name: str = Field(min_length=1)
    modality: str = "OT"


class Box(_Model):
    """One object box in voxel index space of the case's image.

    ``box`` is ``[x0, y0, x1, y1]`` (2D) or ``[x0, y0, z0, x1, y1, z1]`` (3D), where axis ``d`` is the
    image's spatial array axis ``d`` (for raster images x is the column, y the row). Coordinates are
    continuous pixel-edge positions: pixel ``i`` spans ``[i, i + 1)``, so ``x0`` is the first covered index
    and ``x1`` is one past the last (a one-pixel box is ``[i, j, i + 1, j + 1]``).
    """

    label: str = Field(min_length=1)
    box: list[float]
    ignore: bool = False  #: VOC ``difficult`` / COCO ``iscrowd``: not counted as a miss or a false positive.

    @field_validator("box")
    @classmethod
    def _check_box(cls, v: list[float]) -> list[float]:
        if len(v) not in (4, 6):
            raise ValueError(f"box needs 4 (2D) or 6 (3D) numbers, got {len(v)}")
        if not all(np.isfinite(v)):
            raise ValueError(f"box {v} has a non-finite coordinate")
        n = len(v) // 2
        if any(v[d + n] <= v[d] for d in range(n)):
            raise ValueError(f"box {v} has zero or negative size (needs x1 > x0, y1 > y0[, z1 > z0])")
        return v

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.box) // 2

    @property
    def size(self) -> list[float]:
        """Extent along each axis, in voxels."""
        n = self.spatial_dims
        return [self.box[d + n] - self.box[d] for d in range(n)]


class Case(_Model):
    """One case: one patient's image(s) with this task's annotation.

    ``images`` holds one relative path per channel. ``label`` is a label-map path (segmentation),
    ``class_`` (JSON ``"class"``) a class index or a list of positive class indices (multi-label),
    ``boxes`` the objects (detection). ``shape`` optionally records the image's spatial shape so boxes
    can be checked without reading pixels.
    """

    id: str = Field(min_length=1)
    patient_id: str = Field(min_length=1)
    images: list[str] = Field(min_length=1)
    label: str | None = None
    class_: int | list[int] | None = Field(default=None, alias="class")
    boxes: list[Box] | None = None
    shape: list[int] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def classes(self) -> list[int]:
        """Class indices of this case (one for single-label, any number for multi-label, none if unset)."""
        if self.class_ is None:
            return []
        return [self.class_] if isinstance(self.class_, int) else list(self.class_)


class Fold(_Model):
    """One cross-validation fold: case ids to train on and to validate on."""

    train: list[str]
    val: list[str]


class Splits(_Model):
    """Cross-validation folds and a held-out test set, by case id (grouped by patient)."""

    folds: list[Fold] = Field(default_factory=list)
    test: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class DatasetSpec(_Model):
    """The content of ``dataset.json``."""

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    task: Task
    channels: list[Channel] = Field(min_length=1)
    labels: dict[str, str] | list[str] = Field(default_factory=list)
    license: str = ""
    source: str = ""
    description: str = ""
    cases: list[Case] = Field(default_factory=list)
    splits: Splits | None = None
    #: Classification: the class a positive finding means (the disease), on which operating points are fitted.
    positive_class: str | None = None

    @model_validator(mode="after")
    def _check_labels(self) -> DatasetSpec:
        if self.task == "segmentation":
            if not isinstance(self.labels, dict):
                raise ValueError('segmentation labels must map label values to names, e.g. {"0": "background"}')
            for key in self.labels:
                if not key.lstrip("-").isdigit():
                    raise ValueError(f"segmentation label key {key!r} is not an integer label value")
        elif self.task in ("classification", "detection") and not isinstance(self.labels, list):
            raise ValueError(f"{self.task} labels must be a list of class names in index order")
        if self.positive_class is not None and (self.task != "classification"
                                                or self.positive_class not in self.class_names()):
            raise ValueError(f"positive_class {self.positive_class!r} is not one of the classes {self.class_names()}")
        return self

    def class_names(self) -> list[str]:
        """Class names: the list for classification/detection, the names by label value for segmentation."""
        if isinstance(self.labels, dict):
            return [self.labels[k] for k in sorted(self.labels, key=int)]
        return list(self.labels)


def format_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line per pydantic error: ``field: message``, with case ids instead of bare list indices."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        parts: list[str] = []
        for i, part in enumerate(loc):
            if isinstance(part, int):
                label = f"[{part}]"
                if i > 0 and loc[i - 1] == "cases" and isinstance(data, dict):
                    cases = data.get("cases") or []
                    if part < len(cases) and isinstance(cases[part], dict) and "id" in cases[part]:
                        label = f"[{part}] (case {cases[part]['id']!r})"
                parts.append(label)
            else:
                parts.append(("." if parts else "") + str(part))
        lines.append(f"{''.join(parts) or '(root)'}: {err['msg']}")
    return "; ".join(lines)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"not valid JSON: {exc}", path=path) from exc


def _parse(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DatasetError(f"invalid {model.__name__}: {format_validation_error(exc, data)}", path=path) from None


def check_leakage(splits: Splits, patient_of: Mapping[str, str], *, path: str | PathLike[str] | None = None) -> None:
    """Refuse splits that put one patient on more than one side, or that name unknown cases.

    Sides are: the test set, and per fold its train and val sets. A patient may be in the train set of
    several folds, but never in a fold's train and val, in two folds' val, or in test and any fold.

    Args:
        splits: The splits to check.
        patient_of: Patient id of each case id.
        path: The file the splits come from, for error messages.

    Raises:
        DatasetError: A split names a case id the dataset does not have, or a case twice.
        SplitLeakageError: A patient is on more than one side; the message names the patient and the sides.
    """
    unknown = sorted(
        {c for fold in splits.folds for c in (*fold.train, *fold.val) if c not in patient_of}
        | {c for c in splits.test if c not in patient_of}
    )
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise DatasetError(f"splits name {len(unknown)} unknown case id(s): {shown}", path=path)

    def sides_of(cases: Iterable[str], side: str, into: dict[str, set[str]]) -> None:
        for c in cases:
            into[patient_of[c]].add(side)

    # In each fold: train vs val vs test.  Across folds: val vs val.
    val_sides: dict[str, set[str]] = defaultdict(set)
    test_patients: dict[str, set[str]] = defaultdict(set)
    sides_of(splits.test, "test", test_patients)
    for k, fold in enumerate(splits.folds):
        seen: dict[str, set[str]] = defaultdict(set)
        sides_of(fold.train, f"fold {k} train", seen)
        sides_of(fold.val, f"fold {k} val", seen)
        sides_of(fold.val, f"fold {k} val", val_sides)
        for patient, sides in test_patients.items():
            if patient in seen:
                seen[patient] |= sides
        for patient, sides in seen.items():
            if len(sides) > 1:
                raise SplitLeakageError(
                    f"patient {patient!r} is on more than one side: {', '.join(sorted(sides))}",
                    path=path,
                    fix="keep all cases of a patient on one side; `deepmia dataset split` groups by patient",
                )
    for patient, sides in val_sides.items():
        if len(sides) > 1:
            raise SplitLeakageError(
                f"patient {patient!r} is in the validation set of several folds: {', '.join(sorted(sides))}",
                path=path,
                fix="each patient may be validated in one fold only",
            )
    for name, cases in [("test", splits.test)] + [
        (f"fold {k} {side}", getattr(f, side)) for k, f in enumerate(splits.folds) for side in ("train", "val")
    ]:
        if len(set(cases)) != len(cases):
            dup = sorted({c for c in cases if cases.count(c) > 1})
            raise DatasetError(f"splits list case(s) {', '.join(dup[:10])} twice in {name}", path=path)


class Dataset:
    """A dataset folder: its validated ``dataset.json`` and the files it names.

    Build one with :meth:`load` (an existing folder) or :meth:`create` (new, then :meth:`save`).

    Args:
        root: The dataset folder; every path in the spec is relative to it.
        spec: The validated content of ``dataset.json``.
    """

    def __init__(self, root: str | PathLike[str], spec: DatasetSpec) -> None:
        self.root = Path(root)
        self.spec = spec
        self._by_id: dict[str, Case] = {}
        self._check_cases()

    # ------------------------------------------------------------ building
    @classmethod
    def load(cls, root: str | PathLike[str], *, check_files: bool = True) -> Dataset:
        """Load and validate ``root/dataset.json`` (and ``root/splits.json`` if present).

        Args:
            root: The dataset folder.
            check_files: Check that every file the cases name exists (the error lists the missing ones).

        Raises:
            DatasetError: The folder, the JSON, a field, a case, or a referenced file is invalid or missing.
            SplitLeakageError: The stored splits put a patient on more than one side.
        """
        root = Path(root)
        path = root / DATASET_FILE
        if not root.is_dir():
            raise DatasetError("dataset folder not found", path=root)
        data = _read_json(path)
        spec = _parse(DatasetSpec, data, path)
        ds = cls(root, spec)
        splits_path = root / SPLITS_FILE
        if splits_path.exists():
            if spec.splits is not None:
                raise DatasetError(
                    f"splits are stored both in {DATASET_FILE} and in {SPLITS_FILE}", path=root,
                    fix="keep one of them",
                )
            ds.spec.splits = _parse(Splits, _read_json(splits_path), splits_path)
            check_leakage(ds.spec.splits, ds.patient_of, path=splits_path)
        elif spec.splits is not None:
            check_leakage(spec.splits, ds.patient_of, path=path)
        if check_files:
            ds.check_files()
        return ds

    @classmethod
    def create(
        cls,
        root: str | PathLike[str],
        *,
        name: str,
        task: str,
        channels: Sequence[Channel | Mapping[str, Any]],
        labels: Mapping[str, str] | Sequence[str] = (),
        cases: Sequence[Case | Mapping[str, Any]] = (),
        license: str = "",
        source: str = "",
        description: str = "",
        splits: Splits | Mapping[str, Any] | None = None,
        positive_class: str | None = None,
    ) -> Dataset:
        """Build a dataset in memory (validated); :meth:`save` writes ``dataset.json``.

        Raises:
            DatasetError: A field or case is invalid.
            SplitLeakageError: ``splits`` put a patient on more than one side.
        """
        data = {
            "name": name,
            "task": task,
            "channels": [c.model_dump() if isinstance(c, BaseModel) else dict(c) for c in channels],
            "labels": dict(labels) if isinstance(labels, Mapping) else list(labels),
            "license": license,
            "source": source,
            "description": description,
            "cases": [c.model_dump(by_alias=True, exclude_none=True) if isinstance(c, BaseModel) else c for c in cases],
            **({"positive_class": positive_class} if positive_class is not None else {}),
        }
        spec = _parse(DatasetSpec, data, Path(root) / DATASET_FILE)
        ds = cls(root, spec)
        if splits is not None:
            ds.set_splits(splits)
        return ds

    def save(self) -> Path:
        """Write ``dataset.json`` (splits included; a ``splits.json`` beside it is replaced by them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / DATASET_FILE
        data = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        (self.root / SPLITS_FILE).unlink(missing_ok=True)
        return path

    def set_splits(self, splits: Splits | Mapping[str, Any]) -> None:
        """Store ``splits`` after checking them for unknown cases and patient leakage (call :meth:`save` after).

        Raises:
            DatasetError: The splits are malformed or name unknown cases.
            SplitLeakageError: A patient is on more than one side.
        """
        parsed = splits if isinstance(splits, Splits) else _parse(Splits, dict(splits), self.root / SPLITS_FILE)
        check_leakage(parsed, self.patient_of, path=self.root / DATASET_FILE)
        self.spec.splits = parsed

    # ---------------------------------------------------------- validation
    def _error(self, problem: str, fix: str | None = None) -> DatasetError:
        return DatasetError(problem, path=self.root / DATASET_FILE, fix=fix)

    def _check_cases(self) -> None:
        spec = self.spec
        names = spec.class_names()
        nch = len(spec.channels)
        for case in spec.cases:
            if case.id in self._by_id:
                raise self._error(f"duplicate case id {case.id!r}", "case ids must be unique")
            self._by_id[case.id] = case
            where = f"case {case.id!r}"
            if len(case.images) != nch:
                raise self._error(
                    f"{where} has {len(case.images)} image(s) but the dataset has {nch} channel(s)",
                    "a dataset channel is one file per case; a colour (RGB) file is one channel whose colours the "
                    "plan gives the network (import it with one --channel, e.g. RGB:US, or none)"
                    if len(case.images) < nch else "name one channel per image file")
            for rel in [*case.images, *([case.label] if case.label else [])]:
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise self._error(f"{where} path {rel!r} must be relative to the dataset folder, inside it")
            if spec.task == "segmentation" and not case.label:
                raise self._error(f"{where} has no label map", "segmentation cases need a 'label' path")
            if spec.task == "classification":
                if case.class_ is None:
                    raise self._error(f"{where} has no class", "classification cases need 'class'")
                bad = [c for c in case.classes if not 0 <= c < len(names)]
                if bad:
                    raise self._error(f"{where} has class index {bad[0]} outside 0..{len(names) - 1} ({names})")
            if spec.task == "detection" and case.boxes is None:
                raise self._error(f"{where} has no boxes", "detection cases need 'boxes' (an empty list if none)")
            for box in case.boxes or []:
                if box.label not in names:
                    raise self._error(f"{where} has a box of unknown class {box.label!r}; classes are {names}")
                if case.shape is not None:
                    check_box_inside(box, case.shape, where=where, path=self.root / DATASET_FILE)

    def check_files(self) -> None:
        """Check that every file the cases name exists.

        Raises:
            DatasetError: Some files are missing; the message lists them (up to 10) and their count.
        """
        missing = [
            f"{case.id}: {rel}"
            for case in self.spec.cases
            for rel in [*case.images, *([case.label] if case.label else [])]
            if not (self.root / rel).exists()
        ]
        if missing:
            shown = "; ".join(missing[:10]) + (f"; and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise self._error(f"{len(missing)} referenced file(s) missing: {shown}")

    # ------------------------------------------------------------- access
    @property
    def name(self) -> str:
        """The dataset's name."""
        return self.spec.name

    @property
    def task(self) -> str:
        """The task the dataset is annotated for."""
        return self.spec.task

    @property
    def cases(self) -> list[Case]:
        """All cases, in file order."""
        return self.spec.cases

    @property
    def splits(self) -> Splits | None:
        """The stored splits, if any."""
        return self.spec.splits

    def without_cases(self, case_ids: Iterable[str]) -> Dataset:
        """The same dataset minus ``case_ids`` and without stored splits (e.g. planning without the test set)."""
        drop = set(case_ids)
        kept = [c for c in self.spec.cases if c.id not in drop]
        return Dataset(self.root, self.spec.model_copy(update={"cases": kept, "splits": None}))

    @property
    def patient_of(self) -> dict[str, str]:
        """Patient id of each case id."""
        return {c.id: c.patient_id for c in self.spec.cases}

    @property
    def patients(self) -> dict[str, list[str]]:
        """Case ids of each patient id."""
        out: dict[str, list[str]] = defaultdict(list)
        for c in self.spec.cases:
            out[c.patient_id].append(c.id)
        return dict(out)

    def case(self, case_id: str) -> Case:
        """The case with id ``case_id``.

        Raises:
            DatasetError: There is no such case.
        """
        try:
            return self._by_id[case_id]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(case_id, self._by_id, n=1)
            raise self._error(f"no case {case_id!r}", f"did you mean {close[0]!r}?" if close else None) from None

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the spec."""
        return self.root / relative

    def _as_case(self, case: Case | str) -> Case:
        return self.case(case) if isinstance(case, str) else case

    def read_image(self, case: Case | str) -> Image:
        """Read a case's channels into one :class:`Image` (channels stacked in ``channels`` order).

        Raises:
            DatasetError: The channel files do not share one grid, or the channel count is wrong.
            ReadError: A file cannot be read.
        """
        from deepmia.io import read_image

        case = self._as_case(case)
        images = [read_image(self.path(rel)) for rel in case.images]
        first = images[0]
        for rel, img in zip(case.images[1:], images[1:], strict=True):
            if not first.same_geometry(img):
                raise self._error(
                    f"case {case.id!r}: channel {rel} has shape {img.spatial_shape} / affine unlike the first "
                    f"channel's {first.spatial_shape}", "resample channels onto one grid before import",
                )
        if len(images) == 1:
            image = first
        else:
            image = first.with_array(np.concatenate([im.array for im in images], axis=0))
        image.meta.update(case_id=case.id, patient_id=case.patient_id)
        return image

    def read_label(self, case: Case | str, *, image: Image | None = None) -> Image:
        """Read a case's label map (kind ``"label"``); with ``image``, check it shares the image's grid.

        Raises:
            DatasetError: The case has no label map, or its shape/geometry differs from ``image``.
        """
        from deepmia.io import read_image

        case = self._as_case(case)
        if not case.label:
            raise self._error(f"case {case.id!r} has no label map")
        label = read_image(self.path(case.label), kind="label")
        if image is not None and label.spatial_shape != image.spatial_shape:
            raise self._error(
                f"case {case.id!r}: label map shape {label.spatial_shape} differs from its image's "
                f"{image.spatial_shape}", "the label map must be on the image's voxel grid",
            )
        label.meta.update(case_id=case.id, patient_id=case.patient_id)
        return label

    def __len__(self) -> int:
        return len(self.spec.cases)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.spec.name!r}, task={self.spec.task}, cases={len(self)}, "
            f"patients={len(self.patients)}, root={str(self.root)!r})"
        )


def check_box_inside(box: Box, shape: Sequence[int], *, where: str, path: str | PathLike[str] | None) -> None:
    """Refuse a box that does not lie inside an image of spatial ``shape`` (continuous coordinates).

    Raises:
        DatasetError: Dimension mismatch, or a coordinate outside ``[0, shape[d]]``.
    """
    n = box.spatial_dims
    if len(shape) != n:
        raise DatasetError(f"{where}: {n}D box {box.box} on a {len(shape)}D image of shape {list(shape)}", path=path)
    for d in range(n):
        if box.box[d] < 0 or box.box[d + n] > shape[d]:
            raise DatasetError(
                f"{where}: box {box.box} ({box.label}) extends outside the image of shape {list(shape)}",
                path=path, fix="clip or fix the box; importers clip partly outside boxes and report them",
            )
