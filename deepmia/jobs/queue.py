"""The persistent job queue: rows of the catalog's ``jobs`` table, claimed atomically by worker processes.

Every state change is one guarded ``UPDATE ... WHERE status = ...`` (and, for a running job, ``AND attempts =
<the claimer's attempt>``), so on SQLite and PostgreSQL alike two workers never claim the same job, a job is
recorded done at most once, and a worker that lost its job (requeued after it was presumed dead) cannot record
anything for it. A job left ``running`` by a killed server is put back in the queue once; orphaned a second time,
it fails with the reason.

States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` (a queued job can be cancelled at once;
a running one is asked to stop and its worker records ``cancelled``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from deepmia.data.catalog import Catalog
from deepmia.data.catalog.models import Job, JobOutput
from deepmia.errors import InvalidArgumentError

__all__ = [
    "ACTIVE",
    "FINAL",
    "MAX_ATTEMPTS",
    "Claimed",
    "QueueFullError",
    "cancel",
    "claim",
    "fail",
    "finish",
    "heartbeat",
    "mark_cancelled",
    "recover",
    "release",
    "submit",
    "worker_name",
]

#: States of a job that has not ended / has ended.
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled")
#: How often a job is started at most (the first run plus one re-run after its worker was killed).
MAX_ATTEMPTS = 2
#: A running job whose heartbeat is older than this is presumed orphaned (its worker is gone).
STALE_AFTER = timedelta(seconds=30)
LOG_LIMIT = 64 * 1024  # characters of log kept per job (the tail)


class QueueFullError(InvalidArgumentError):
    """A user already has as many jobs queued or running as allowed."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def worker_name(index: int | str = "") -> str:
    """The name a worker process records on the jobs it claims: ``host:pid[:index]``."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{index}" if index != "" else "")


@dataclass(frozen=True)
class Claimed:
    """A job a worker claimed: what to run, for whom, and which attempt this is."""

    id: int
    kind: str
    params: dict[str, Any]
    user: str | None
    series_id: int | None
    attempt: int


def submit(
    catalog: Catalog,
    kind: str,
    params: dict[str, Any] | None = None,
    user: str | None = None,
    *,
    series_id: int | None = None,
    max_active: int | None = None,
) -> int:
    """Queue a job; returns its id.

    Args:
        catalog: The open catalog holding the queue.
        kind: What to run (``predict``, ``quality``, ``process``, ``register``; see :mod:`deepmia.jobs.kinds`).
        params: JSON-ready parameters of the job.
        user: Who asked (an account name, or e.g. ``pacs``).
        series_id: The series the job works on (its results link back to it).
        max_active: Refuse when ``user`` already has this many jobs queued or running.

    Raises:
        QueueFullError: ``user`` has ``max_active`` jobs queued or running.
    """
    if not kind or len(kind) > 32:
        raise InvalidArgumentError(f"job kind {kind!r} is empty or longer than 32 characters")
    with catalog.session() as s:
        if max_active is not None:
            active = s.scalar(select(func.count(Job.id)).where(Job.user == user, Job.status.in_(ACTIVE)))
            if active >= max_active:
                raise QueueFullError(f"{user} already has {active} jobs queued or running (limit {max_active})",
                                     fix="wait for some to finish, or cancel some")
        job = Job(kind=kind, status="queued", progress=0.0, params=dict(params or {}), user=user,
                  series_id=series_id, attempts=0, created_at=_now(), cancel_requested=False)
        s.add(job)
        s.flush()
        return job.id


def claim(
    catalog: Catalog, worker: str, *, kinds: Sequence[str] | None = None, per_user_limit: int | None = None
) -> Claimed | None:
    """Claim the oldest queued job (of ``kinds``) for ``worker``; ``None`` when there is none.

    The claim is one guarded UPDATE (``WHERE id = ? AND status = 'queued'``): of two workers racing for a job,
    exactly one gets it. Jobs of users who already run ``per_user_limit`` jobs wait.
    """
    for _ in range(20):  # lost races: try the next candidates
        with catalog.session() as s:
            query = select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(8)
            if kinds:
                query = query.where(Job.kind.in_(list(kinds)))
            if per_user_limit is not None:
                busy = (select(Job.user).where(Job.status == "running", Job.user.is_not(None))
                        .group_by(Job.user).having(func.count(Job.id) >= per_user_limit))
                query = query.where((Job.user.is_(None)) | (Job.user.not_in(busy)))
            candidates = list(s.scalars(query))
        if not candidates:
            return None
        for job_id in candidates:
            with catalog.session() as s:
                now = _now()
                won = s.execute(
                    update(Job).where(Job.id == job_id, Job.status == "queued")
                    .values(status="running", worker=worker, attempts=Job.attempts + 1, started_at=now,
                            heartbeat_at=now, progress=0.0, error=None)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if won == 1:
                    job = s.get(Job, job_id)
                    return Claimed(job.id, job.kind, dict(job.params or {}), job.user, job.series_id, job.attempts)
    return None


def _mine(job_id: int, attempt: int):
    return (Job.id == job_id) & (Job.status == "running") & (Job.attempts == attempt)


def heartbeat(
    catalog: Catalog, job_id: int, attempt: int, *, progress: float | None = None, log: str | None = None
) -> str:
    """Record that attempt ``attempt`` of a running job is alive (with its progress and log so far).

    Returns:
        ``ok``; ``cancel`` when a user asked to cancel it; ``lost`` when the job is no longer this attempt's
        (requeued after it was presumed dead, or ended): its worker must stop without recording anything.
    """
    values: dict[str, Any] = {"heartbeat_at": _now()}
    if progress is not None:
        values["progress"] = float(min(100.0, max(0.0, progress)))
    if log is not None:
        values["log"] = log[-LOG_LIMIT:]
    with catalog.session() as s:
        if s.execute(update(Job).where(_mine(job_id, attempt)).values(**values)
                     .execution_options(synchronize_session=False)).rowcount != 1:
            return "lost"
        return "cancel" if s.scalar(select(Job.cancel_requested).where(Job.id == job_id)) else "ok"


def finish(
    catalog: Catalog,
    job_id: int,
    attempt: int,
    *,
    outputs: Iterable[dict[str, Any]] = (),
    result: dict[str, Any] | None = None,
    log: str | None = None,
    also: Callable[[Session, int], None] | None = None,
) -> bool:
    """Record a job done with its outputs, in one transaction; ``False`` if it was not this attempt's any more.

    Args:
        catalog: The open catalog holding the queue.
        job_id: The job.
        attempt: The attempt that ran it (from :class:`Claimed`).
        outputs: ``{kind, name, media_type, path}`` of each file, already in its final place.
        result: A JSON-ready summary.
        log: The job's final log.
        also: More rows to write in the same transaction (e.g. a ``predictions`` row): ``also(session, job_id)``.
    """
    with catalog.session() as s:
        values: dict[str, Any] = {"status": "done", "progress": 100.0, "finished_at": _now(), "result": result}
        if log is not None:
            values["log"] = log[-LOG_LIMIT:]
        if s.execute(update(Job).where(_mine(job_id, attempt)).values(**values)
                     .execution_options(synchronize_session=False)).rowcount != 1:
            return False
        now = _now()
        s.add_all(JobOutput(job_id=job_id, kind=o["kind"], name=o["name"], media_type=o["media_type"],
                            path=str(o["path"]), created_at=now) for o in outputs)
        if also is not None:
            also(s, job_id)
    return True


def fail(catalog: Catalog, job_id: int, attempt: int, error: str, *, log: str | None = None) -> bool:
    """Record a running job failed with ``error``; ``False`` if it was not this attempt's any more."""
    values: dict[str, Any] = {"status": "failed", "finished_at": _now(), "error": error[:4000]}
    if log is not None:
        values["log"] = log[-LOG_LIMIT:]
    with catalog.session() as s:
        return s.execute(update(Job).where(_mine(job_id, attempt)).values(**values)
                         .execution_options(synchronize_session=False)).rowcount == 1


def mark_cancelled(catalog: Catalog, job_id: int, attempt: int) -> bool:
    """Record a running job cancelled (by its worker, which then stops); ``False`` if it ended meanwhile."""
    with catalog.session() as s:
        return s.execute(update(Job).where(_mine(job_id, attempt))
                         .values(status="cancelled", finished_at=_now(), error="cancelled by a user")
                         .execution_options(synchronize_session=False)).rowcount == 1


def cancel(catalog: Catalog, job_id: int) -> str | None:
    """Cancel a job: a queued one at once, a running one by asking its worker to stop.

    Returns:
        The job's state afterwards (a running job stays ``running`` until its worker stops), or ``None`` for an
        unknown id.
    """
    with catalog.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                  .values(status="cancelled", finished_at=_now(), error="cancelled by a user")
                  .execution_options(synchronize_session=False))
        s.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True)
                  .execution_options(synchronize_session=False))
        return s.scalar(select(Job.status).where(Job.id == job_id))


def _pid_gone(worker: str | None, host: str, live: set[str]) -> bool:
    """Whether ``worker`` (``host:pid[:i]``) ran on this host and is neither a live worker nor a live process."""
    if not worker or worker in live:
        return False
    parts = worker.split(":")
    if parts[0] != host or len(parts) < 2 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover(
    catalog: Catalog, *, live: Iterable[str] = (), stale_after: timedelta = STALE_AFTER
) -> list[tuple[int, str]]:
    """Requeue (once) or fail the running jobs whose worker is gone; returns ``(job id, new state)`` pairs.

    A job's worker is gone when it ran on this host and its process no longer exists (and it is not one of
    ``live``, this server's workers), or when its heartbeat is older than ``stale_after`` (any host).
    """
    host, live, changed = socket.gethostname(), set(live), []
    limit = _now() - stale_after
    with catalog.session() as s:
        rows = s.execute(select(Job.id, Job.worker, Job.attempts, Job.heartbeat_at, Job.cancel_requested)
                         .where(Job.status == "running", Job.kind != "scan")).all()
    for job_id, worker, attempts, beat, cancelled in rows:
        if worker in live or not (_pid_gone(worker, host, live) or beat is None or beat < limit):
            continue
        if cancelled:
            values = {"status": "cancelled", "finished_at": _now(), "error": "cancelled by a user"}
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": "failed", "finished_at": _now(),
                      "error": f"its worker ended while it ran, {attempts} times (server killed?); not re-run again"}
        else:
            values = {"status": "queued", "worker": None, "progress": 0.0,
                      "log": f"requeued: its worker {worker} ended while it ran (attempt {attempts})\n"}
        with catalog.session() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.status == "running", Job.attempts == attempts)
                             .values(**values).execution_options(synchronize_session=False)).rowcount
        if done:
            changed.append((job_id, values["status"]))
    return changed


def release(catalog: Catalog, workers: Iterable[str]) -> int:
    """Put the running jobs of ``workers`` back in the queue uncounted (a server stopping on purpose)."""
    names = list(workers)
    if not names:
        return 0
    with catalog.session() as s:
        return s.execute(update(Job).where(Job.status == "running", Job.worker.in_(names))
                         .values(status="queued", worker=None, progress=0.0, attempts=Job.attempts - 1)
                         .execution_options(synchronize_session=False)).rowcount
