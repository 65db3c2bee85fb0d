"""Job endpoints: submit, list, follow (server-sent events), cancel, and download outputs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import func, select

from deepmia.data.catalog.models import Job, JobOutput, Series
from deepmia.errors import DeepmiaError
from deepmia.jobs import FINAL, QueueFullError, cancel, submit

from . import schemas
from .accounts import Principal, audit, role_at_least
from .queries import available_models, model_info
from .routes_data import Id
from .security import require

__all__ = ["SERVICE_KINDS", "job_view", "router"]

router = APIRouter(prefix="/api", responses=schemas.ERRORS)
Viewer = Annotated[Principal, Depends(require("viewer"))]
Annotator = Annotated[Principal, Depends(require("annotator"))]
SERVICE_KINDS = ("predict", "quality", "process", "register")
OUTPUT_KINDS = set(schemas.OutputKind.__args__)


def _catalog(request: Request):
    return request.app.state.catalog


def job_views(catalog: Any, jobs: list[Job]) -> list[schemas.Job]:
    """API jobs, with the outputs of those done."""
    ids = [j.id for j in jobs]
    outputs: dict[int, list[schemas.Output]] = {}
    with catalog.session() as s:
        for o in s.scalars(select(JobOutput).where(JobOutput.job_id.in_(ids)).order_by(JobOutput.id)):
            kind = o.kind if o.kind in OUTPUT_KINDS else "other"
            outputs.setdefault(o.job_id, []).append(
                schemas.Output(id=o.id, job_id=o.job_id, kind=kind, name=o.name, media_type=o.media_type))
    return [schemas.Job(id=j.id, kind=j.kind, state=j.status, progress=j.progress or 0.0, log=j.log or "",
                        error=j.error, series_id=j.series_id, user=j.user, model=(j.params or {}).get("model"),
                        created_at=j.created_at, started_at=j.started_at, finished_at=j.finished_at,
                        outputs=outputs.get(j.id, [])) for j in jobs]


def job_view(catalog: Any, job_id: int) -> schemas.Job:
    """One API job (404 if unknown)."""
    with catalog.session() as s:
        job = s.get(Job, job_id)
    if job is None or job.kind == "scan":
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return job_views(catalog, [job])[0]


def _options(kind: str, options: schemas.JobOptions | None) -> dict[str, Any]:
    options_dict = options.model_dump(exclude_none=True) if options is not None else {}
    if kind == "process":
        steps = options_dict.get("steps")
        if not steps:
            raise HTTPException(status_code=422, detail="a process job needs options.steps, e.g. ['gaussian:sigma=1']")
        from deepmia.processing import resolve_steps

        try:
            resolve_steps(steps)
        except DeepmiaError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
    return options_dict


def _series_exists(request: Request, series_id: int | None, field: str) -> int:
    if series_id is None:
        raise HTTPException(status_code=422, detail=f"this job needs {field}")
    with _catalog(request).session() as s:
        if s.get(Series, series_id) is None:
            raise HTTPException(status_code=404, detail=f"no series {series_id}")
    return series_id


@router.post("/jobs", response_model=schemas.Job, status_code=201, tags=["jobs"],
             responses={429: {"description": "too many jobs of this user queued or running"}})
def create_job(request: Request, who: Annotator, body: schemas.JobRequest) -> schemas.Job:
    """Submit a job (annotator or admin): predict, quality, process (``options.steps``) or register."""
    settings = request.app.state.settings
    params: dict[str, Any] = {"options": _options(body.kind, body.options)}
    series_id = _series_exists(request, body.series_id, "series_id")
    if body.kind == "register":
        params["moving_series_id"] = _series_exists(request, body.moving_series_id, "moving_series_id")
    if body.kind in ("predict", "register"):
        models = available_models(settings)
        name = body.model or ("hippocampus_registration" if body.kind == "register" else None)
        if name is None:
            raise HTTPException(status_code=422, detail="a predict job needs a model (GET /api/models lists them)")
        if name not in models:
            raise HTTPException(status_code=404, detail="no model of that name (GET /api/models lists them)")
        params |= {"model": name, "model_dir": str(models[name])}
        if params["options"].get("saliency") and model_info(name, models[name]).task != "classification":
            raise HTTPException(status_code=422, detail=f"options.saliency needs a classification model; {name} "
                                                        "is not one")
    try:
        job_id = submit(_catalog(request), body.kind, params, who.user, series_id=series_id,
                        max_active=settings.per_user_active)
    except QueueFullError as exc:
        raise HTTPException(status_code=429, detail=str(exc)) from None
    audit(_catalog(request), who.user, "run", f"job {job_id}", json.dumps({"kind": body.kind, "series": series_id,
                                                                         "model": params.get("model")}))
    return job_view(_catalog(request), job_id)


@router.get("/jobs", response_model=schemas.JobList, tags=["jobs"])
def list_jobs(request: Request, who: Viewer,
              state: Annotated[str | None, Query(pattern=r"^(queued|running|done|failed|cancelled)$")] = None,
              page: Annotated[int, Query(ge=1, le=10**6)] = 1, size: Annotated[int, Query(ge=1, le=500)] = 50,
              series_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
              kind: Annotated[str | None, Query(pattern=r"^(predict|quality|process|register)$")] = None,
              ) -> schemas.JobList:
    """Jobs, newest first, filtered by state, series and kind."""
    query = select(Job).where(Job.kind != "scan")
    if state:
        query = query.where(Job.status == state)
    if series_id is not None:
        query = query.where(Job.series_id == series_id)
    if kind:
        query = query.where(Job.kind == kind)
    with _catalog(request).session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery()))
        jobs = list(s.scalars(query.order_by(Job.id.desc()).offset((page - 1) * size).limit(size)))
    return schemas.JobList(items=job_views(_catalog(request), jobs), total=total)


@router.get("/jobs/{job_id}", response_model=schemas.Job, tags=["jobs"])
def get_job(request: Request, who: Viewer, job_id: Id) -> schemas.Job:
    """One job: state, progress, log and outputs."""
    return job_view(_catalog(request), job_id)


@router.post("/jobs/{job_id}/cancel", response_model=schemas.Job, tags=["jobs"])
def cancel_job(request: Request, who: Annotator, job_id: Id) -> schemas.Job:
    """Cancel a job: a queued one at once, a running one as soon as its worker sees it (own jobs; admin: any)."""
    view = job_view(_catalog(request), job_id)
    if view.user != who.user and not role_at_least(who.role, "admin"):
        raise HTTPException(status_code=403, detail="only its owner or an admin can cancel a job")
    cancel(_catalog(request), job_id)
    audit(_catalog(request), who.user, "cancel", f"job {job_id}")
    return job_view(_catalog(request), job_id)


@router.get("/jobs/{job_id}/events", tags=["jobs"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "one `data: <Job>` per change"}})
async def job_events(request: Request, who: Viewer, job_id: Id) -> StreamingResponse:
    """Server-sent events: the job as JSON each time it changes; the stream ends when the job ends."""
    catalog = _catalog(request)
    first = await run_in_threadpool(job_view, catalog, job_id)

    async def stream():
        view, last, waited = first, None, 0.0
        while True:
            text = view.model_dump_json()
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if view.state in FINAL or waited > 3600 or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)
            waited += 0.5
            view = await run_in_threadpool(job_view, catalog, job_id)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


@router.get("/outputs/{output_id}", tags=["jobs"], response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the output file"}})
def output(request: Request, who: Viewer, output_id: Id) -> FileResponse:
    """A job's output file, by id (label maps as .nii.gz, detections and measurements as JSON)."""
    with _catalog(request).session() as s:
        row = s.get(JobOutput, output_id)
        found = None if row is None else (Path(row.path), row.media_type, row.name, row.job_id)
    if found is None or not found[0].is_file():
        raise HTTPException(status_code=404, detail=f"no output {output_id}")
    audit(_catalog(request), who.user, "download", f"output {output_id}", f"job {found[3]}")
    return FileResponse(found[0], media_type=found[1], filename=found[2])
