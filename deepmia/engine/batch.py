"""The one batch loop every task's file-based prediction goes through.

Input discovery (a file is one input; a folder holding one DICOM series is one input; a folder holding several
series gives one input per series; other image files in a folder are one input each), reading, prediction
through any task's predictor (``predict_many(images) -> results``), writing each result, one skip list for all
tasks (``skipped.csv``: file, reason), one measurement table (``measurements.csv``) and a ``run.json`` record
next to the outputs: the model and its hashes, deepmia's and key packages' versions, the inputs with their
hashes, the options, the device and the timings.

Example:
    >>> from deepmia.engine.batch import discover_inputs      # doctest: +SKIP
    >>> items, skipped = discover_inputs("study/")            # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from deepmia.errors import DeepmiaError, InvalidArgumentError, WriteError

__all__ = ["InputItem", "BatchReport", "discover_inputs", "run_batch", "write_record", "environment",
           "predict_chunk", "write_result", "write_tables", "measurement_rows", "MEASUREMENT_COLUMNS"]

#: Columns of the measurement table (same as :data:`deepmia.tasks.MEASUREMENT_COLUMNS`).
MEASUREMENT_COLUMNS = ("case", "target", "quantity", "value", "unit")
NOT_AN_INPUT = "not an image file or DICOM series deepmia reads"
#: Packages whose versions every run.json records.
KEY_PACKAGES = ("numpy", "torch", "monai", "SimpleITK", "pydicom", "nibabel", "scipy", "highdicom")


@dataclass
class InputItem:
    """One input of a batch: an image file, or one DICOM series (its files).

    Attributes:
        path: The file, or the folder the series was found in.
        name: Output name: the file's name, or a name for the series (folder name, or ``<number>_<description>``).
        series_uid: The DICOM series, for a series input.
        files: The series' files (empty for a plain file).
    """

    path: Path
    name: str
    series_uid: str | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def is_series(self) -> bool:
        """Whether this input is a DICOM series (read from several files or one multi-frame file)."""
        return self.series_uid is not None

    def read(self) -> Any:
        """The input as an :class:`~deepmia.image.Image` (``meta["case_id"]`` set to its output stem)."""
        from deepmia.io import image_stem, read_image

        if self.is_series:
            from deepmia.io.dicom import read_series

            image = read_series(self.files)
            image.meta.setdefault("source", str(self.path))
            image.meta.setdefault("source_files", [str(f) for f in self.files])  # DICOM outputs reference them
        else:
            image = read_image(self.path)
        image.meta.setdefault("case_id", image_stem(self.name))
        return image

    def hash(self) -> str:
        """SHA-256 over the input's bytes (a series: over its files' names and bytes, in order)."""
        h = hashlib.sha256()
        for p in self.files or [self.path]:
            if self.files:
                h.update(p.name.encode())
            with open(p, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """The input as run.json lists it."""
        entry: dict[str, Any] = {"name": self.name, "path": str(self.path)}
        if self.is_series:
            entry |= {"series_uid": self.series_uid, "files": len(self.files)}
        try:
            entry["sha256"] = self.hash()
        except OSError as exc:
            entry["sha256"] = None
            entry["hash_error"] = str(exc)
        return entry


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "series"


def _series_name(info: Any, used: set[str]) -> str:
    parts = [str(info.series_number)] if info.series_number is not None else []
    if info.description:
        parts.append(info.description)
    name = _safe("_".join(parts) or info.series_uid)
    base, k = name, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def discover_inputs(src: str | os.PathLike[str]) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """The inputs under ``src`` and the entries that are not inputs (with the reason).

    A file is one input (a DICOM file too). In a folder, image files in a non-DICOM format (NIfTI, NRRD, PNG,
    ...) are one input each, and every DICOM series found in it or its sub-folders is one input: a folder that
    holds a single series (and nothing else) is one input named after the folder; several series are named
    ``<series number>_<description>``.

    Raises:
        InvalidArgumentError: ``src`` does not exist, or the folder holds no input at all.
    """
    from deepmia.io import format_of, is_image_file
    from deepmia.io.dicom.series import list_series

    src = Path(src)
    if src.is_file():
        return [InputItem(src, src.name)], []
    if not src.is_dir():
        raise InvalidArgumentError("no such file or folder", path=src)
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    for p in sorted(q for q in src.iterdir() if q.is_file() and not q.name.startswith(".")):
        if is_image_file(p) and format_of(p) != "dicom":
            items.append(InputItem(p, p.name))
    plain = {i.path for i in items}
    series = list_series(src, recursive=True)
    for path, reason in series.skipped:
        p = Path(path)
        if p not in plain and not p.name.startswith("."):
            reason = NOT_AN_INPUT if reason == "not a DICOM file" else reason
            skipped.append((str(p.relative_to(src)) if p.is_relative_to(src) else str(p), reason))
    accounted = plain | {f for info in series for f in info.files} | {Path(p) for p, _ in series.skipped}
    for p in sorted(src.rglob("*")):
        if p.is_file() and p not in accounted and not any(part.startswith(".") for part in p.relative_to(src).parts):
            skipped.append((str(p.relative_to(src)), NOT_AN_INPUT))
    only_series = len(series) == 1 and not items
    used: set[str] = set()
    for info in series:
        name = _safe(src.resolve().name) if only_series else _series_name(info, used)
        items.append(InputItem(src, name, series_uid=info.series_uid, files=list(info.files)))
    if not items:
        raise InvalidArgumentError(
            f"no image file or DICOM series in the folder ({len(skipped)} other file(s))", path=src
        )
    return items, skipped


def environment() -> dict[str, Any]:
    """Deepmia's version, Python, the platform and the versions of the key packages."""
    versions = {}
    for name in ("deepmia", *KEY_PACKAGES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


@dataclass
class BatchReport:
    """What a batch run did: the names predicted, the skipped entries and the run record's path."""

    predicted: list[str]
    skipped: list[tuple[str, str]]
    warnings: list[str]
    outputs: list[Path]
    record: Path
    results: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Inputs attempted (predicted + skipped inputs)."""
        return len(self.predicted) + len(self.skipped)


def _write_table(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _resolve_target(dst: Path, items: Sequence[InputItem], file_output: bool) -> tuple[Path, list[str] | None]:
    """Output folder, and the output names when ``dst`` names one output file (one input, image suffix)."""
    from deepmia.io import format_of

    try:
        looks_like_file = dst.suffix != "" and not dst.is_dir() and format_of(dst, must_exist=False) != "dicom"
    except DeepmiaError:
        looks_like_file = False
    if not looks_like_file:
        return dst, None
    if len(items) != 1:
        raise InvalidArgumentError(
            f"{len(items)} inputs cannot go into one file", path=dst, fix="give an output folder (no image suffix)"
        )
    if not file_output:
        raise InvalidArgumentError(
            "this task writes a table and files for its inputs, not one image", path=dst, fix="give an output folder"
        )
    return dst.parent, [dst.name]


def run_batch(
    predictor: Any,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    formats: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    keep_results: bool = False,
    writers: Sequence[Callable[[str, Any, Path], list[Path]]] = (),
) -> BatchReport:
    """Predict every input under ``src`` into ``dst`` and record the run.

    Args:
        predictor: Any task's predictor (``predict_many``, ``check``, ``describe``; its result class writes).
        src: A file, a DICOM series folder, or a folder of inputs (see :func:`discover_inputs`).
        dst: Output folder; for one input of a task that writes one image per input, a path with an image
            suffix names that file.
        formats: Extra outputs the task's results can write (``figure``, ``probabilities``, ...).
        options: Options to record in run.json besides the predictor's own (e.g. the command line's).
        progress: Called as ``progress(done, total, name)`` after each input.
        keep_results: Also return the results in memory.
        writers: More outputs per result, from layers above the tasks (e.g. the report layer's figures):
            ``writer(name, result, out_dir) -> paths``.

    Returns:
        The report; ``dst/skipped.csv`` lists the skipped entries, ``dst/measurements.csv`` the measurements
        and ``dst/run.json`` the record.

    Raises:
        DeepmiaError: Nothing could be predicted (for one input, that input's own error).
    """
    started = time.time()
    src, dst = Path(src), Path(dst)
    items, skipped = discover_inputs(src)
    out_dir, names = _resolve_target(dst, items, getattr(predictor, "file_output", False))
    predictor.check_run([i.name for i in items])
    bad_formats = sorted(set(formats) - set(getattr(predictor, "formats", ())))
    if bad_formats:
        raise InvalidArgumentError(
            f"this {predictor.task} model cannot write {', '.join(bad_formats)}",
            fix=f"it writes {', '.join(predictor.formats) or 'only its default outputs'}",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    done = _Done(out_dir, formats, writers, keep=keep_results)
    errors: list[DeepmiaError] = []
    chunk = max(1, int(getattr(predictor, "batch_size", 1)))
    for start in range(0, len(items), chunk):
        t = time.perf_counter()
        found = predict_chunk(predictor, items[start:start + chunk], skipped, errors)
        per = (time.perf_counter() - t) / max(1, len(found))
        for item, result in found:
            done.add(item.name, names[0] if names else item.name, result, seconds=per)
        if progress:
            progress(min(start + chunk, len(items)), len(items), items[min(start + chunk, len(items)) - 1].name)
    if not done.names:
        if len(items) == 1 and errors:
            raise errors[0]
        raise InvalidArgumentError(
            f"no input could be predicted ({len(skipped)} skipped)",
            path=src,
            fix=f"see the reasons in {out_dir / 'skipped.csv'}" if skipped else None,
        )
    outputs = done.finish(skipped)
    record = write_record(
        out_dir / (f"{Path(names[0]).name.split('.')[0]}.run.json" if names else "run.json"),
        predictor, [i.record() | {"seconds": done.seconds.get(i.name)} for i in items], done.names,
        skipped=skipped, warnings=done.warnings, outputs=outputs,
        options={**(options or {}), "formats": list(formats)}, started=started,
    )
    return BatchReport(done.names, skipped, done.warnings, outputs, record, done.kept if keep_results else [])


def write_record(
    path: Path, predictor: Any, inputs: Sequence[dict[str, Any]], predicted: Sequence[str], *,
    skipped: Sequence[tuple[str, str]] = (), warnings: Sequence[str] = (), outputs: Sequence[Path] = (),
    options: dict[str, Any] | None = None, started: float | None = None,
) -> Path:
    """Write a run record (``run.json``) atomically.

    It holds the command, the predictor (model, hashes, options, device), the environment, the inputs (with
    hashes), what was predicted and skipped, the outputs and the timings.
    """
    started = time.time() if started is None else started
    base = path.parent
    entry = {
        "deepmia_run": 1,
        "command": sys.argv,
        "predictor": predictor.describe(),
        "options": options or {},
        "environment": environment(),
        "inputs": list(inputs),
        "predicted": list(predicted),
        "skipped": [{"file": f, "reason": r} for f, r in skipped],
        "warnings": list(warnings),
        "outputs": [str(p.relative_to(base)) if p.is_relative_to(base) else str(p) for p in outputs],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_json(path, entry)
    return path


def predict_chunk(
    predictor: Any, items: Sequence[InputItem], skipped: list, errors: list
) -> list[tuple[InputItem, Any]]:
    """Read, check and predict some inputs in one ``predict_many`` call: the batch loop's unit of work.

    An input that cannot be read, is refused or fails alone is appended to ``skipped`` (name, reason) and
    ``errors`` and left out; a batch that fails as a whole is predicted input by input.

    Returns:
        ``(input, result)`` for each predicted input, in input order.
    """
    batch = _read_batch(predictor, items, skipped, errors)
    if not batch:
        return []
    try:
        found = predictor.predict_many([image for _, image in batch])
    except DeepmiaError as exc:
        found = _one_by_one(predictor, batch, skipped, errors, exc)
    return [(item, result) for (item, _), result in zip(batch, found, strict=True) if result is not None]


def write_result(
    result: Any, out_dir: Path, name: str, *, formats: Sequence[str] = (), writers: Sequence[Callable] = (),
    input_name: str | None = None,
) -> list[Path]:
    """Write one result's files (the task's own, then each writer's) into ``out_dir``; returns the paths.

    Raises:
        WriteError: A file could not be written (read-only folder, full disk), naming the input.
    """
    try:
        outputs = list(result.write(out_dir, name, formats=formats))
        return outputs + [p for w in writers for p in w(name, result, out_dir)]
    except OSError as exc:
        raise WriteError(f"could not write the result of {input_name or name}: {exc}", path=out_dir) from exc


def measurement_rows(result: Any) -> list[list[Any]]:
    """A result's rows of ``measurements.csv`` (:data:`MEASUREMENT_COLUMNS` order)."""
    return [[r.get(c, "") for c in MEASUREMENT_COLUMNS] for r in result.measurements()]


def write_tables(
    out_dir: Path, kept: Sequence[tuple[str, Any]], table_type: Any, rows: Sequence[Sequence[Any]],
    skipped: Sequence[tuple[str, str]],
) -> list[Path]:
    """Write the task's table of all cases (``table_type.write_table``), ``measurements.csv`` and ``skipped.csv``.

    A stale ``skipped.csv`` from an earlier run is removed when nothing was skipped. Returns the tables written.
    """
    outputs = []
    if table_type is not None:
        outputs += table_type.write_table(kept, out_dir)
    if rows:
        _write_table(out_dir / "measurements.csv", MEASUREMENT_COLUMNS, rows)
        outputs.append(out_dir / "measurements.csv")
    skipped_csv = out_dir / "skipped.csv"
    if skipped:
        _write_table(skipped_csv, ("file", "reason"), skipped)
    elif skipped_csv.exists():  # a stale list from an earlier run would contradict this one
        skipped_csv.unlink()
    return outputs


def _read_batch(predictor: Any, items: Sequence[InputItem], skipped: list, errors: list) -> list[tuple[InputItem, Any]]:
    batch = []
    for item in items:
        try:
            image = predictor.conform(item.read())
            predictor.check(image, path=item.path)  # refusals raise before a batch forms
        except DeepmiaError as exc:
            skipped.append((item.name, str(exc)))
            errors.append(exc)
            continue
        batch.append((item, image))
    return batch


def _one_by_one(predictor: Any, batch: list, skipped: list, errors: list, first: DeepmiaError) -> list[Any]:
    """Predict a batch that failed as a whole input by input, so one bad input skips only itself."""
    if len(batch) == 1:
        skipped.append((batch[0][0].name, str(first)))
        errors.append(first)
        return [None]
    found = []
    for item, image in batch:
        try:
            found.append(predictor.predict(image))
        except DeepmiaError as exc:
            skipped.append((item.name, str(exc)))
            errors.append(exc)
            found.append(None)
    return found


class _Done:
    """What a batch has written so far: each result is written as soon as it is predicted, then kept light."""

    def __init__(self, out_dir: Path, formats: Sequence[str], writers: Sequence[Callable], *, keep: bool) -> None:
        self.out_dir, self.formats, self.writers, self.keep = out_dir, formats, writers, keep
        self.names: list[str] = []
        self.kept: list[tuple[str, Any]] = []
        self.outputs: list[Path] = []
        self.rows: list[list[Any]] = []
        self.warnings: list[str] = []
        self.seconds: dict[str, float] = {}
        self.table_type: Any = None

    def add(self, input_name: str, name: str, result: Any, *, seconds: float) -> None:
        self.outputs += write_result(result, self.out_dir, name, formats=self.formats, writers=self.writers,
                                     input_name=input_name)
        self.rows += measurement_rows(result)
        self.warnings += [f"{input_name}: {w}" for w in getattr(result, "warnings", ())]
        self.seconds[input_name] = round(seconds, 4)
        self.names.append(name)
        if self.keep or result.has_table:
            self.kept.append((name, result.light()))
            self.table_type = type(result) if result.has_table else self.table_type

    def finish(self, skipped: Sequence[tuple[str, str]]) -> list[Path]:
        """Write the task's table of all cases, ``measurements.csv`` and ``skipped.csv``; returns every output."""
        return list(self.outputs) + write_tables(self.out_dir, self.kept, self.table_type, self.rows, skipped)


def _atomic_json(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
