"""Worker processes of the job queue: each claims a job, runs it, renames its outputs into place, records it.

A pool of processes (``multiprocessing`` spawn: the models are CPU-bound and torch does not like forks) started by
:class:`WorkerPool`, which restarts a worker that died and, every few seconds, requeues once (or fails) the jobs
whose worker is gone (:func:`deepmia.jobs.recover`). A worker dies with its server (Linux parent-death signal,
and a check of its parent), so a killed server leaves no worker running its jobs; the restarted server re-runs them.

Outputs go to ``DATA/jobs/<id>/attempt-<n>.partial/`` while the job runs; the folder is renamed to
``attempt-<n>`` (atomic) before the job is recorded done, and only then do its output rows exist: the service
never serves a partial file.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from deepmia.errors import DeepmiaError

from .kinds import KINDS, JobContext
from .queue import Claimed, claim, fail, finish, heartbeat, mark_cancelled, recover, release, worker_name

__all__ = ["WorkerPool", "run_one", "worker_main"]

POLL_S = 0.3
HEARTBEAT_S = 1.0


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        except OSError:
            pass


class _Beat:
    """The heartbeat thread of one running job: flushes progress and log; stops the process on cancel."""

    def __init__(self, catalog: Any, job: Claimed) -> None:
        self.catalog, self.job = catalog, job
        self.progress, self.lines = 0.0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def log(self, text: str) -> None:
        self.lines.append(f"{time.strftime('%H:%M:%S')} {text}")

    def set_progress(self, value: float) -> None:
        self.progress = float(value)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            try:
                state = heartbeat(self.catalog, self.job.id, self.job.attempt, progress=self.progress, log=self.text)
            except Exception:  # a database hiccup: the next beat tries again
                continue
            if state == "cancel":
                if mark_cancelled(self.catalog, self.job.id, self.job.attempt):
                    os._exit(0)  # the pool starts a new worker; the partial folder is never served
            elif state == "lost":
                os._exit(0)  # requeued meanwhile: another attempt owns the job now


def run_one(catalog: Any, job: Claimed, data_dir: Path, models_dir: Path | None) -> str:
    """Run one claimed job to its end; returns the state recorded (``done``, ``failed`` or ``lost``)."""
    base = Path(data_dir) / "jobs" / str(job.id)
    partial, final = base / f"attempt-{job.attempt}.partial", base / f"attempt-{job.attempt}"
    for stale in (partial, final, base / f"attempt-{job.attempt}.partial.input"):
        shutil.rmtree(stale, ignore_errors=True)
    partial.mkdir(parents=True)
    beat = _Beat(catalog, job)
    beat.log(f"attempt {job.attempt} on {worker_name()}")
    beat.thread.start()
    try:
        ctx = JobContext(catalog, partial, models_dir, beat.set_progress, beat.log)
        try:
            runner = KINDS[job.kind]
        except KeyError:
            raise DeepmiaError(f"unknown job kind {job.kind!r}") from None
        outcome = runner(job, ctx)
        os.replace(partial, final)  # atomic: the outputs appear complete, or not at all
        outputs = [{**o, "path": final / Path(o["path"]).relative_to(partial)} for o in outcome.outputs]

        def record_prediction(session: Any, job_id: int) -> None:
            if outcome.prediction is not None and job.series_id is not None:
                from datetime import UTC, datetime

                from deepmia.data.catalog.models import Prediction

                path = outcome.prediction.get("path")
                session.add(Prediction(
                    series_id=job.series_id, job_id=job_id, task=outcome.prediction["task"],
                    model=outcome.prediction["model"], created_at=datetime.now(UTC).replace(tzinfo=None),
                    scores=outcome.prediction.get("scores"),
                    path=str(final / Path(path).relative_to(partial)) if path else None))

        beat.log("done")
        ok = finish(catalog, job.id, job.attempt, outputs=outputs, result=outcome.result, log=beat.text,
                    also=record_prediction)
        return "done" if ok else "lost"
    except Exception as exc:
        reason = str(exc) if isinstance(exc, DeepmiaError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, DeepmiaError):
            beat.log(traceback.format_exc())
        beat.log(f"failed: {reason}")
        return "failed" if fail(catalog, job.id, job.attempt, reason, log=beat.text) else "lost"
    finally:
        beat.stop.set()
        shutil.rmtree(base / f"attempt-{job.attempt}.partial.input", ignore_errors=True)


def worker_main(db_url: str, data_dir: str, models_dir: str | None, parent_pid: int,
                per_user_limit: int | None = None, index: int = 0) -> None:
    """The loop of one worker process: claim, run, repeat; ends when its parent (the server) is gone."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops its workers itself
    from deepmia._warnings import ignore_library_warnings
    from deepmia.data.catalog import open_catalog

    ignore_library_warnings()
    catalog = open_catalog(db_url, upgrade=False)
    name = worker_name(index)
    models = Path(models_dir) if models_dir else None
    while os.getppid() == parent_pid:
        job = claim(catalog, name, kinds=list(KINDS), per_user_limit=per_user_limit)  # not the PACS node's jobs
        if job is None:
            time.sleep(POLL_S)
            continue
        run_one(catalog, job, Path(data_dir), models)


class WorkerPool:
    """``n`` worker processes (spawned) plus a supervisor thread that restarts dead ones and recovers jobs.

    Args:
        db_url: The catalog's URL (each worker opens its own connections).
        data_dir: Where job outputs go (``DATA/jobs/<id>/``).
        models_dir: The ``--models`` folder, if any.
        n: Number of worker processes.
        per_user_limit: Jobs of one user running at once.
    """

    def __init__(self, catalog: Any, db_url: str, data_dir: Path, models_dir: Path | None, n: int,
                 per_user_limit: int | None = None) -> None:
        self.catalog, self.db_url, self.n = catalog, db_url, n
        self.args = (db_url, str(data_dir), str(models_dir) if models_dir else None, os.getpid(), per_user_limit)
        self.procs: list[multiprocessing.Process | None] = [None] * n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="deepmia-job-supervisor")

    def live(self) -> set[str]:
        """Names of this pool's live workers (as they record them on the jobs they claim)."""
        host = worker_name().rsplit(":", 1)[0]
        return {f"{host}:{p.pid}:{i}" for i, p in enumerate(self.procs) if p is not None and p.is_alive()}

    def _start(self, i: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=worker_main, args=(*self.args, i), daemon=True, name=f"deepmia-worker-{i}")
        proc.start()
        self.procs[i] = proc

    def start(self) -> None:
        """Recover the jobs a killed server left running, start the workers and the supervisor."""
        recover(self.catalog, live=())
        for i in range(self.n):
            self._start(i)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(2.0):
            for i, proc in enumerate(self.procs):
                if proc is not None and not proc.is_alive() and not self._stop.is_set():
                    proc.join(0)
                    self._start(i)
            try:
                recover(self.catalog, live=self.live())
            except Exception:  # a database hiccup: the next round tries again
                continue

    def stop(self) -> None:
        """Stop the workers (their running jobs are requeued by the next server start)."""
        self._stop.set()
        names = self.live()
        for proc in self.procs:
            if proc is not None and proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                proc.join(5)
        release(self.catalog, names)
