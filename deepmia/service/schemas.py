"""Typed request and response models of the service's API (what ``/docs`` shows)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AuditRow", "Job", "JobList", "JobRequest", "Me", "ModelInfo", "Output", "Series", "Study",
           "StudyDetail", "StudyPage", "UploadResult"]

JobKind = Literal["predict", "quality", "process", "register"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
OutputKind = Literal["label_map", "probabilities", "detections", "saliency", "measurements", "warped",
                     "report_html", "report_pdf", "card", "other"]


class Me(BaseModel):
    """The signed-in user."""

    user: str
    role: Literal["viewer", "annotator", "admin"]


class Series(BaseModel):
    """A stored series."""

    id: int
    series_uid: str
    study_id: int
    modality: str | None = None
    description: str | None = None
    number: int | None = None
    n_instances: int
    rows: int | None = None
    columns: int | None = None


class Study(BaseModel):
    """A stored study (``patient_id`` is the patient's pseudonym; names are never stored)."""

    id: int
    study_uid: str
    patient_id: str
    study_date: date | None = None
    modality: str | None = None
    description: str | None = None
    n_series: int


class StudyDetail(Study):
    """A study with its series."""

    series: list[Series]


class StudyPage(BaseModel):
    """One page of the worklist."""

    items: list[Study]
    total: int
    page: int
    size: int


class UploadResult(BaseModel):
    """What an upload stored, and the files it did not take (with the reason)."""

    studies: list[Study]
    series: list[Series]
    skipped: list[str] = Field(default_factory=list)


class ModelInfo(BaseModel):
    """A model the service can run: its card (markdown), plan and metrics."""

    name: str
    task: str | None = None
    card_markdown: str | None = None
    plan: dict[str, Any] | None = None
    metrics: dict[str, Any] | list[Any] | None = None


class JobRequest(BaseModel):
    """A job to run: its kind, model and series (``options`` per kind, e.g. ``{"steps": [...]}`` for process)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    model: str | None = Field(default=None, max_length=256)
    series_id: int | None = Field(default=None, ge=1, le=2**62)
    moving_series_id: int | None = Field(default=None, ge=1, le=2**62)
    options: dict[str, Any] | None = None


class Output(BaseModel):
    """A file a finished job wrote (download with ``GET /api/outputs/{id}``)."""

    id: int
    job_id: int
    kind: OutputKind
    name: str
    media_type: str


class Job(BaseModel):
    """A job: state, progress (0..100), log, error and, once done, its outputs."""

    id: int
    kind: str
    state: str
    progress: float
    log: str
    error: str | None = None
    series_id: int | None = None
    user: str | None = None
    model: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outputs: list[Output]


class JobList(BaseModel):
    """One page of jobs."""

    items: list[Job]
    total: int


class AuditRow(BaseModel):
    """One audit log entry."""

    time: datetime
    user: str | None = None
    action: str
    object: str | None = None
    detail: str | None = None
