"""The node's work records: prediction jobs in the shared job queue, deliveries in a persistent outbox.

A routed series becomes a job of kind ``pacs-predict`` in the catalog's queue (:mod:`deepmia.jobs`: submitted by
user ``pacs`` on the indexed series, claimed, heart-beaten, finished or failed there; a job left running by a
stopped node is requeued by :func:`deepmia.jobs.recover`). Its DICOM outputs then go to each destination
through the **outbox**: one JSON file per (job, destination) under ``STORAGE/outbox/`` holding the files, the
attempts, the next try and the last error. The outbox is on disk, so queued deliveries survive a restart; each
change is also written into the job's ``result["deliveries"]`` so ``deepmia catalog`` users see it.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from deepmia.data.catalog import Catalog
from deepmia.data.catalog.models import Job, Series

__all__ = ["KIND", "USER", "Delivery", "Outbox", "series_id", "note_delivery", "job_row"]

KIND = "pacs-predict"
USER = "pacs"


@dataclass
class Delivery:
    """One destination's share of a job's outputs and how sending it went so far."""

    job: int
    destination: str
    files: list[str]
    status: str = "queued"  # queued | sent | failed
    attempts: int = 0
    next_try: float = field(default_factory=time.time)
    error: str | None = None
    sent_at: float | None = None

    @property
    def key(self) -> str:
        """The outbox entry's file stem."""
        return f"job-{self.job}-{self.destination}"


class Outbox:
    """Deliveries waiting or done, one JSON file each under ``folder`` (written atomically).

    Args:
        folder: The outbox folder (created).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, delivery: Delivery) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in delivery.key)
        return self.folder / f"{safe}.json"

    def put(self, delivery: Delivery) -> None:
        """Write (or rewrite) a delivery."""
        path = self._path(delivery)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps(asdict(delivery), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def all(self) -> list[Delivery]:
        """Every delivery, oldest job first."""
        out = [Delivery(**json.loads(p.read_text(encoding="utf-8"))) for p in self.folder.glob("*.json")]
        return sorted(out, key=lambda d: (d.job, d.destination))

    def due(self, now: float | None = None) -> list[Delivery]:
        """Queued deliveries whose next try has come."""
        moment = time.time() if now is None else now
        return [d for d in self.all() if d.status == "queued" and d.next_try <= moment]


def series_id(catalog: Catalog, series_uid: str) -> int | None:
    """The catalog id of an indexed series, or None."""
    with catalog.session() as s:
        return s.scalar(select(Series.id).where(Series.series_uid == series_uid))


def note_delivery(catalog: Catalog, delivery: Delivery) -> None:
    """Mirror a delivery's state into its job's ``result["deliveries"]`` (the job's status is left alone)."""
    with catalog.session() as s:
        job = s.get(Job, delivery.job)
        if job is None:
            return
        result = copy.deepcopy(job.result or {})
        result.setdefault("deliveries", {})[delivery.destination] = {
            "status": delivery.status, "attempts": delivery.attempts, "error": delivery.error,
            "sent_at": delivery.sent_at}
        job.result = result


def job_row(catalog: Catalog, job_id: int) -> dict[str, Any] | None:
    """A job's status, params, result and error (None for an unknown id)."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        return {"id": job.id, "kind": job.kind, "status": job.status, "params": job.params, "result": job.result,
                "error": job.error, "series_id": job.series_id, "attempts": job.attempts}
