"""Recording a batch run in the catalog: one ``jobs`` row per run, one ``predictions`` row per predicted series.

Only the driver writes, in one transaction per call. Recording is idempotent: it is done from the manifest, and a
series that already has a prediction of this model at this output path is not added again, so a resumed or
repeated run never duplicates a row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["start_job", "finish_job", "record_predictions"]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def start_job(db: str | None, params: dict[str, Any]) -> int:
    """Add a running ``batch_predict`` job; returns its id."""
    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import Job

    with open_catalog(db) as catalog, catalog.session() as s:
        job = Job(kind="batch_predict", status="running", progress=0.0, params=params, created_at=_now(),
                  started_at=_now())
        s.add(job)
        s.flush()
        return int(job.id)


def finish_job(db: str | None, job_id: int, *, status: str, result: dict[str, Any] | None = None,
               error: str | None = None) -> None:
    """Set the job's final status, result and error."""
    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import Job

    with open_catalog(db) as catalog, catalog.session() as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.status, job.result, job.error, job.finished_at = status, result, error, _now()
            job.progress = 1.0 if status == "done" else job.progress


def record_predictions(db: str | None, job_id: int | None, records: list[dict[str, Any]], *, task: str, model: str,
                       out_dir: Path) -> tuple[int, int]:
    """Add a ``predictions`` row for each done record whose input is a series in the catalog.

    Returns:
        ``(added, not_in_catalog)``: rows added, and done cases whose input is no catalogued series (a plain
        image file, or a series not scanned yet).
    """
    from sqlalchemy import select

    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import Prediction, Series

    done = [r for r in records if r.get("status") == "done"]
    added = missing = 0
    with open_catalog(db) as catalog, catalog.session() as s:
        uids = {r["series_uid"] for r in done if r.get("series_uid")}
        query = select(Series.series_uid, Series.id).where(Series.series_uid.in_(uids))
        ids = {uid: id_ for uid, id_ in s.execute(query)} if uids else {}
        existing = {(sid, path) for sid, path in
                    s.execute(select(Prediction.series_id, Prediction.path).where(Prediction.model == model))}
        for r in done:
            series_id = ids.get(r.get("series_uid"))
            if series_id is None:
                missing += 1
                continue
            path = str(out_dir / r["outputs"][0]) if r.get("outputs") else str(out_dir)
            if (series_id, path) in existing:
                continue
            scores = {f"{m[1]} {m[2]}": m[3] for m in r.get("measurements", [])}
            s.add(Prediction(series_id=series_id, job_id=job_id, task=task, model=model, path=path, scores=scores,
                             created_at=_now()))
            existing.add((series_id, path))
            added += 1
    return added, missing
