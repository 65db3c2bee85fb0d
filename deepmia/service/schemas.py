"""Typed request and response models of the service's API (what ``/docs`` shows)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["ERRORS", "AuditRow", "Error", "Job", "JobList", "JobOptions", "JobRequest", "Me", "ModelInfo", "Output",
           "Series", "Study", "StudyDetail", "StudyPage", "UploadResult"]

#: Times are stored as naive UTC; the API states the zone (RFC 3339).
UTCTime = Annotated[datetime, AfterValidator(lambda t: t.replace(tzinfo=UTC) if t.tzinfo is None else t)]
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


class JobOptions(BaseModel):
    """Options of a job, each for some kinds only.

    ``tta`` and ``device`` (predict, register), ``report`` (predict, register), ``saliency`` (predict with a
    classification model), ``bias`` (quality), ``steps`` (process).
    """

    model_config = ConfigDict(extra="forbid")

    tta: bool | None = None
    device: Literal["cpu", "cuda", "auto"] | None = None
    report: Literal["en", "zh"] | None = Field(
        default=None, description="also write the clinical report (HTML and PDF) in this language")
    saliency: bool | None = Field(default=None, description="classification: also write the Grad-CAM saliency map")
    bias: bool | None = None
    steps: list[Annotated[str, Field(max_length=500)]] | None = Field(default=None, max_length=100)


class JobRequest(BaseModel):
    """A job to run: its kind, model and series (``options`` per kind, e.g. ``{"steps": [...]}`` for process)."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    model: str | None = Field(default=None, max_length=256)
    series_id: int | None = Field(default=None, ge=1, le=2**62)
    moving_series_id: int | None = Field(default=None, ge=1, le=2**62)
    options: JobOptions | None = None


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
    created_at: UTCTime
    started_at: UTCTime | None = None
    finished_at: UTCTime | None = None
    outputs: list[Output]


class JobList(BaseModel):
    """One page of jobs."""

    items: list[Job]
    total: int


class AuditRow(BaseModel):
    """One audit log entry."""

    time: UTCTime
    user: str | None = None
    action: str
    object: str | None = None
    detail: str | None = None


class Error(BaseModel):
    """An error: a message, or (422 from request validation) the list of problems."""

    detail: str | list[dict[str, Any]]


#: The error responses every endpoint may give (declared so the OpenAPI describes them).
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": text} for code, text in (
        (401, "not authenticated"), (403, "role too low, or CSRF token missing"), (404, "unknown id"),
        (413, "request too large"), (422, "invalid request"), (429, "too many jobs queued"))
}
