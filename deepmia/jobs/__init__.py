"""The persistent job queue of the service (and of ``deepmia pacs listen``): jobs in the catalog database.

Submit with :func:`submit`; worker processes (:class:`~deepmia.jobs.pool.WorkerPool`) claim, run and finish them.

Example:
    >>> from deepmia.data.catalog import open_catalog          # doctest: +SKIP
    >>> from deepmia.jobs import submit                          # doctest: +SKIP
    >>> job_id = submit(open_catalog("c.sqlite"), "quality", {}, "alice", series_id=3)  # doctest: +SKIP
"""

from .queue import (
    ACTIVE,
    FINAL,
    MAX_ATTEMPTS,
    Claimed,
    QueueFullError,
    cancel,
    claim,
    fail,
    finish,
    heartbeat,
    mark_cancelled,
    recover,
    release,
    submit,
    worker_name,
)

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
