"""``batch_predict``: predict many cases with one model, in a local process pool or on a Ray cluster, resumably.

The driver finds the inputs, leaves out those the manifest lists as finished (same name, same size and
modification time), hands the rest to the workers in chunks, appends each finished case to the manifest as it
comes back, and at the end writes the same tables as ``deepmia predict`` (the task's table of all cases,
``measurements.csv``, ``skipped.csv``, in input order, over this run's and earlier runs' cases) and ``run.json``.
With a catalog (``db``) it adds a ``jobs`` row and one ``predictions`` row per predicted catalogued series.

Example:
    >>> from deepmia.distributed import batch_predict                          # doctest: +SKIP
    >>> batch_predict("pneumoniamnist", "pngs/", "out/", workers=2).predicted  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepmia.engine.batch import write_record, write_tables
from deepmia.errors import DeepmiaError, InvalidArgumentError, WriteError

from .inputs import resolve_inputs
from .manifest import STATE_DIR, Manifest, input_stat
from .work import BatchJob, item_payload

__all__ = ["BatchOutcome", "batch_predict"]


@dataclass
class BatchOutcome:
    """What a batch run did.

    Attributes:
        out_dir: The output folder.
        predicted: Output names of every predicted case (this run's and earlier runs'), in input order.
        skipped: ``(name, reason)`` of inputs that could not be predicted.
        resumed: Cases an earlier run had finished, not run again.
        retried: Cases run more than once because a worker died.
        record: The run record (``run.json``).
        timings: ``startup_s`` (connecting and model loading, until the first case came back), ``total_s`` and
            ``cases_per_s`` (this run's cases after start-up).
        catalog: ``added`` prediction rows and done cases ``not_in_catalog`` (with a catalog only).
    """

    out_dir: Path
    predicted: list[str]
    skipped: list[tuple[str, str]]
    resumed: int
    retried: list[str]
    record: Path
    timings: dict[str, float] = field(default_factory=dict)
    catalog: dict[str, int] = field(default_factory=dict)


def _prepare(out_dir: Path) -> Any:
    """Create OUT and its state folder, removing temporary files a killed run left; refuse a read-only folder.

    Returns:
        The open lock file: one run at a time writes into OUT (the lock goes when the file is closed).

    Raises:
        WriteError: OUT cannot be written.
        InvalidArgumentError: Another batch run holds OUT.
    """
    import fcntl

    try:
        (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
        lock = (out_dir / STATE_DIR / "lock").open("a")
    except OSError as exc:
        raise WriteError(f"cannot write in the output folder: {exc}", path=out_dir,
                         fix="give an output folder you can write to, with free space") from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise InvalidArgumentError("another batch run is writing into this output folder", path=out_dir,
                                   fix="wait for it to end, or give another --out") from None
    try:
        shutil.rmtree(out_dir / STATE_DIR / "tmp", ignore_errors=True)
        (out_dir / STATE_DIR / "tmp").mkdir(parents=True, exist_ok=True)
        probe = out_dir / STATE_DIR / "tmp" / "probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        lock.close()
        raise WriteError(f"cannot write in the output folder: {exc}", path=out_dir,
                         fix="give an output folder you can write to, with free space") from exc
    return lock


def _stat(item: Any) -> tuple[int, int] | None:
    try:
        return input_stat(item.files or [item.path])
    except OSError:
        return None


def batch_predict(
    model_dir: str | Path, source: str | Path, out_dir: str | Path, *, ray: str | None = None, workers: int = 1,
    db: str | None = None, options: dict[str, Any] | None = None, formats: Sequence[str] = (),
    figure: bool = False, dicom: bool = False, threads: int | None = None, chunk: int | None = None,
    worker_cpus: float = 0.75, progress: Callable[[int, int, str], None] | None = None,
) -> BatchOutcome:
    """Predict every input of ``source`` into ``out_dir`` with ``workers`` workers (local processes or Ray actors).

    Args:
        model_dir: A model directory or a shipped model's name.
        source: A folder or file, a dataset folder, or a catalog query (see :func:`resolve_inputs`).
        out_dir: Output folder; holds ``manifest.jsonl`` and the outputs ``deepmia predict`` writes.
        ray: A Ray cluster's address (``HOST:PORT`` or ``auto``); ``None`` runs a local process pool.
        workers: Worker processes (local) or model actors (Ray).
        db: Catalog to record the run and its predictions in (and to run a catalog query against).
        options: The task predictor's keyword options (``tta``, ``folds``, ``device``, ...).
        formats: Extra outputs (``probabilities``).
        figure: Also draw figures.
        dicom: Also write DICOM SEG/SR for DICOM inputs.
        threads: Torch threads per worker (default: the CPUs divided among the local workers, or the CPUs a Ray
            actor reserves, at least 1; more threads than cores makes every worker many times slower).
        chunk: Cases per unit of work (default: the task's batch size, smaller when there are few cases).
        worker_cpus: CPUs each Ray model actor reserves.
        progress: Called as ``progress(done, total, name)`` as cases finish.

    Raises:
        DeepmiaError: Bad inputs or options, an unreachable cluster, an output folder that cannot be written
            (nothing half-written is recorded as done: the same command resumes), or nothing predicted.
    """
    from deepmia.tasks import load_predictor, resolve_model

    t0 = time.perf_counter()
    started, out_dir = time.time(), Path(out_dir)
    model_dir = resolve_model(model_dir)
    items, skipped_entries, kind = resolve_inputs(str(source), db)
    predictor = load_predictor(model_dir, **(options or {}))
    predictor.check_run([i.name for i in items])
    bad = sorted(set(formats) - set(getattr(predictor, "formats", ())))
    if bad:
        raise InvalidArgumentError(f"this {predictor.task} model cannot write {', '.join(bad)}")
    lock = _prepare(out_dir)
    if threads is None:
        threads = max(1, int(worker_cpus) if ray else (os.cpu_count() or 1) // workers)
    job = BatchJob(str(model_dir), str(out_dir.resolve()), dict(options or {}), tuple(formats), figure, dicom, threads)
    with lock, Manifest(out_dir) as manifest:
        todo = [i for i in items if not manifest.done(i.name, _stat(i))]
        resumed, total = len(items) - len(todo), len(items)
        chunk = chunk or min(max(1, int(predictor.batch_size)), max(1, -(-len(todo) // (4 * workers))))
        payloads = [item_payload(i) for i in todo]
        first: list[float] = []
        count = [resumed]
        job_id = _catalog_start(db, model_dir, source, out_dir, workers, ray)

        def on_records(records: list[dict[str, Any]]) -> None:
            first or first.append(time.perf_counter())
            for record in records:
                record["retried"] = int(record.get("attempts") or 1) > 1
            count[0] += manifest.add_many(records)
            if progress and records:
                progress(count[0], total, records[-1]["case"])

        try:
            connect_s = _execute(job, payloads, ray=ray, workers=workers, chunk=chunk, on_records=on_records)
        except BaseException as exc:
            _catalog_fail(db, job_id, exc)
            raise
        records = [manifest.records[i.name] for i in items if i.name in manifest.records]
        timings = _timings(t0, first, connect_s, len(todo))
        outcome = _finish(predictor, out_dir, records, skipped_entries, resumed=resumed, started=started,
                          options={**(options or {}), "workers": workers, "ray": ray, "source": str(source),
                                   "source_kind": kind, "formats": list(formats), "figure": figure, "dicom": dicom},
                          timings=timings)
        if db is not None:
            outcome.catalog = _catalog_finish(db, job_id, predictor, model_dir, out_dir, records, outcome)
        shutil.rmtree(out_dir / STATE_DIR / "tmp", ignore_errors=True)
        return outcome


def _execute(job: BatchJob, payloads: list[dict[str, Any]], *, ray: str | None, workers: int, chunk: int,
             on_records: Callable[[list[dict[str, Any]]], None]) -> float:
    """Run the cases on the chosen backend; returns the seconds spent connecting to Ray (0 locally)."""
    if not payloads:
        return 0.0
    if ray is None:
        from .local import run_local

        chunks = [payloads[i:i + chunk] for i in range(0, len(payloads), chunk)]
        run_local(job, chunks, workers=workers, on_records=on_records)
        return 0.0
    from .ray_backend import connect, run_ray

    connect_s = connect(ray)
    job = dataclasses.replace(job, marks=True)
    run_ray(job, payloads, workers=workers, chunk=chunk, on_records=on_records)
    return connect_s


def _timings(t0: float, first: list[float], connect_s: float, cases: int) -> dict[str, float]:
    end = time.perf_counter()
    startup = (first[0] - t0) if first else end - t0
    rate = cases / (end - first[0]) if first and end > first[0] else 0.0
    return {"connect_s": round(connect_s, 3), "startup_s": round(startup, 3), "total_s": round(end - t0, 3),
            "cases": cases, "cases_per_s_after_startup": round(rate, 3)}


def _finish(predictor: Any, out_dir: Path, records: list[dict[str, Any]], skipped_entries: list[tuple[str, str]],
            *, resumed: int, started: float, options: dict[str, Any], timings: dict[str, float]) -> BatchOutcome:
    """Write the tables over every finished case (in input order) and run.json, as ``deepmia predict`` does."""
    done = [r for r in records if r["status"] == "done"]
    skipped = [(r["case"], r.get("reason", "")) for r in records if r["status"] == "skipped"] + list(skipped_entries)
    if not done:
        write_tables(out_dir, [], None, [], skipped)
        raise InvalidArgumentError(f"no input could be predicted ({len(skipped)} skipped)", path=out_dir,
                                   fix=f"see the reasons in {out_dir / 'skipped.csv'}")
    kept, table_type = [], None
    for r in done:
        if r.get("part"):
            light = pickle.loads((out_dir / r["part"]).read_bytes())
            kept.append((r["case"], light))
            table_type = type(light)
    rows = [row for r in done for row in r.get("measurements", [])]
    try:
        outputs = [out_dir / p for r in done for p in r.get("outputs", [])]
        outputs += write_tables(out_dir, kept, table_type, rows, skipped)
        inputs = [{"name": r["case"], "path": r["input"], "sha256": r.get("sha256"), "seconds": r.get("seconds"),
                   "worker": r.get("worker"), "attempts": r.get("attempts"), "retried": r.get("retried", False)}
                  | ({"series_uid": r["series_uid"]} if r.get("series_uid") else {}) for r in records]
        record = write_record(out_dir / "run.json", predictor, inputs, [r["case"] for r in done], skipped=skipped,
                              warnings=[f"{r['case']}: {w}" for r in done for w in r.get("warnings", [])],
                              outputs=outputs, options={**options, "timings": timings}, started=started)
    except OSError as exc:
        raise WriteError(f"could not write the run's tables: {exc}", path=out_dir,
                         fix="free space or make the folder writable; the same command resumes") from exc
    return BatchOutcome(out_dir, [r["case"] for r in done], skipped, resumed,
                        [r["case"] for r in records if r.get("retried")], record, timings)


def _model_name(predictor: Any, model_dir: Path) -> str:
    weights = predictor.describe().get("hashes", {}).get("weights", "")
    return f"{model_dir.resolve().name}@{weights[:12]}"


def _catalog_start(db: str | None, model_dir: Path, source: Any, out_dir: Path, workers: int,
                   ray: str | None) -> int | None:
    if db is None:
        return None
    from .catalog import start_job

    return start_job(db, {"model": str(model_dir), "input": str(source), "out": str(out_dir), "workers": workers,
                          "ray": ray})


def _catalog_fail(db: str | None, job_id: int | None, exc: BaseException) -> None:
    if db is None or job_id is None:
        return
    from .catalog import finish_job

    status = "failed" if isinstance(exc, Exception) else "interrupted"
    try:
        finish_job(db, job_id, status=status, error=str(exc) or type(exc).__name__)
    except DeepmiaError:  # the run's own error is the one to report
        pass


def _catalog_finish(db: str, job_id: int | None, predictor: Any, model_dir: Path, out_dir: Path,
                    records: list[dict[str, Any]], outcome: BatchOutcome) -> dict[str, int]:
    from .catalog import finish_job, record_predictions

    added, missing = record_predictions(db, job_id, records, task=predictor.task,
                                        model=_model_name(predictor, model_dir), out_dir=out_dir.resolve())
    summary = {"added": added, "not_in_catalog": missing}
    if job_id is not None:
        finish_job(db, job_id, status="done", result={
            "predicted": len(outcome.predicted), "skipped": len(outcome.skipped), "resumed": outcome.resumed,
            "retried": len(outcome.retried), **summary, **outcome.timings})
    return summary
