"""What every batch worker does, in a local process or a Ray actor/task.

It loads the predictor once, reads, predicts and writes one chunk of cases atomically, and describes each case as
a manifest record.

Writing is atomic per file: a case's files are written by the task's own writers (:func:`deepmia.engine.batch.
write_result`, the same code ``deepmia predict`` runs) into a private temporary folder inside OUT and then renamed
into place; only then does the case's record go back to the driver, which appends it to the manifest. Before a
case is predicted, and again before it is written, a Ray worker leaves a numbered mark in
``OUT/.deepmia-batch/attempts/`` (``<case>@p1``, ``<case>@p2``, ...; created exclusively, so two attempts never
take one number): a case whose worker died and that was run again has more than one mark, and its record says
``retried``. The local pool needs no marks: its driver knows which chunks it gave out again.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmia.engine.batch import InputItem, measurement_rows, predict_chunk, write_result
from deepmia.errors import DeepmiaError, WriteError

from .manifest import STATE_DIR, input_stat

__all__ = ["BatchJob", "LoadedItem", "item_payload", "item_of", "predict_items", "write_case", "skipped_record",
           "worker_name"]


@dataclass(frozen=True)
class BatchJob:
    """The settings every worker of a batch run needs (picklable: it travels to processes and Ray actors).

    Attributes:
        model_dir: The model directory.
        out_dir: The output folder.
        options: Keyword options of the task's predictor (``tta``, ``folds``, ``device``, ``runtime``, ...).
        formats: Extra outputs the results write (``probabilities``).
        figure: Also draw each result's figures (the report layer's writer).
        dicom: Also write DICOM SEG/SR objects for DICOM inputs.
        threads: Torch threads per worker (None: torch's default).
        marks: Leave attempt marks (Ray, where a task may run again on another node unbeknown to the driver).
    """

    model_dir: str
    out_dir: str
    options: dict[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = ()
    figure: bool = False
    dicom: bool = False
    threads: int | None = None
    marks: bool = False

    def load(self) -> Any:
        """The task's predictor for this model (each worker calls this once)."""
        from deepmia.tasks import load_predictor

        predictor = load_predictor(self.model_dir, **self.options)
        if self.threads:  # after loading: a predictor may set torch's threads to every core (segmentation does)
            import torch

            torch.set_num_threads(self.threads)
        return predictor

    def writers(self) -> list[Any]:
        """The extra per-result writers ``deepmia predict`` would use with the same flags."""
        out: list[Any] = []
        if self.figure:
            from deepmia.report.results import result_figures

            out.append(result_figures)
        if self.dicom:
            from deepmia.report.dicom import dicom_writer

            out.append(dicom_writer(self.model_dir))
        return out


def worker_name() -> str:
    """``host:pid`` of this process (Ray workers add their node's id)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    ray = sys.modules.get("ray")  # never imported here: the local pool runs without Ray
    if ray is not None and ray.is_initialized():
        name = f"node {ray.get_runtime_context().get_node_id()[:8]} {name}"
    return name


def item_payload(item: InputItem) -> dict[str, Any]:
    """An input as plain data (for Ray rows and process queues)."""
    return {"path": str(item.path), "name": item.name, "series_uid": item.series_uid,
            "files": [str(f) for f in item.files]}


def item_of(payload: dict[str, Any]) -> InputItem:
    """The input back from :func:`item_payload`."""
    return InputItem(Path(payload["path"]), payload["name"], payload.get("series_uid") or None,
                     [Path(f) for f in payload.get("files") or []])


@dataclass
class LoadedItem(InputItem):
    """An input whose image was read earlier (by a Ray read task): :meth:`read` returns it or raises the error."""

    image: Any = None
    error: DeepmiaError | None = None

    def read(self) -> Any:
        """The image read earlier, or the read error raised again."""
        if self.error is not None:
            raise self.error
        return self.image


def _mark(job: BatchJob, name: str, stage: str) -> None:
    """Take the next attempt number of case ``name`` at ``stage`` (``p`` predict, ``w`` write)."""
    if not job.marks:
        return
    folder = Path(job.out_dir) / STATE_DIR / "attempts"
    k = 1
    while True:
        try:
            fd = os.open(folder / f"{name}@{stage}{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            k += 1
            continue
        os.write(fd, worker_name().encode())
        os.close(fd)
        return


def _attempts(job: BatchJob, name: str, default: int = 1) -> int:
    """How many times case ``name`` was predicted or written (the most marks at one stage); ``default`` unmarked."""
    if not job.marks:
        return default
    folder = Path(job.out_dir) / STATE_DIR / "attempts"
    counts = []
    for stage in "pw":
        k = 0
        while (folder / f"{name}@{stage}{k + 1}").exists():
            k += 1
        counts.append(k)
    return max(1, *counts)


def predict_items(job: BatchJob, predictor: Any, items: list[InputItem]) -> tuple[list, list[tuple[str, str]], float]:
    """Predict a chunk (marking each case's attempt first); returns ``(input, result)`` pairs, skips, seconds."""
    out_dir = Path(job.out_dir)
    try:
        (out_dir / STATE_DIR / "attempts").mkdir(parents=True, exist_ok=True)
        for item in items:
            _mark(job, item.name, "p")
    except OSError as exc:
        raise WriteError(f"cannot write in the output folder: {exc}", path=out_dir,
                         fix="give an output folder you can write to, with free space") from exc
    skipped: list[tuple[str, str]] = []
    started = time.perf_counter()
    found = predict_chunk(predictor, items, skipped, [])
    return found, skipped, time.perf_counter() - started


def _stat_fields(item: InputItem) -> dict[str, Any]:
    try:
        size, mtime = input_stat(item.files or [item.path])
    except OSError:
        size, mtime = None, None
    return {"case": item.name, "input": str(item.path), "series_uid": item.series_uid, "size": size,
            "mtime_ns": mtime}


def skipped_record(job: BatchJob, item: InputItem, reason: str, *, attempt: int = 1) -> dict[str, Any]:
    """The manifest record of an input that was skipped (unreadable, refused by the model, failed alone)."""
    return _stat_fields(item) | {"status": "skipped", "reason": reason, "worker": worker_name(),
                                 "attempts": _attempts(job, item.name, attempt)}


def write_case(
    job: BatchJob, item: InputItem, result: Any, *, writers: list[Any], seconds: float, worker: str | None = None,
    attempt: int = 1,
) -> dict[str, Any]:
    """Write one case's outputs atomically into OUT and return its manifest record.

    The files go to a private temporary folder first and are renamed into place one by one (a rename within one
    file system is atomic), so OUT never holds a half-written file under its final name. Tasks that write one
    table of all cases also keep the case's light result (``.deepmia-batch/parts/<case>.pkl``) for that table.

    Raises:
        WriteError: A file could not be written (read-only folder, full disk); nothing of the case is left.
    """
    out_dir = Path(job.out_dir)
    state = out_dir / STATE_DIR
    tmp = state / "tmp" / uuid.uuid4().hex
    outputs: list[str] = []
    try:
        _mark(job, item.name, "w")
        tmp.mkdir(parents=True)
        written = write_result(result, tmp, item.name, formats=job.formats, writers=writers, input_name=item.name)
        for path in written:
            rel = Path(path).relative_to(tmp)
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, out_dir / rel)
            outputs.append(rel.as_posix())
        part = None
        if result.has_table:
            part = (Path(STATE_DIR) / "parts" / f"{item.name}.pkl").as_posix()
            (out_dir / part).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "part.pkl").write_bytes(pickle.dumps(result.light()))
            os.replace(tmp / "part.pkl", out_dir / part)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(f"could not write the result of {item.name}: {exc}", path=out_dir,
                         fix="give an output folder you can write to, with free space; the run resumes") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _stat_fields(item) | {
        "status": "done", "sha256": item.hash(), "outputs": outputs, "part": part,
        "measurements": measurement_rows(result), "warnings": list(getattr(result, "warnings", ()) or ()),
        "worker": worker or worker_name(), "attempts": _attempts(job, item.name, attempt), "seconds": round(seconds, 4),
        "finished_at": round(time.time(), 3),
    }
