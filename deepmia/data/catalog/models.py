"""SQLAlchemy 2 models of the catalog: what is indexed, never the pixels (those stay in their files).

The schema itself is owned by the Alembic migrations in ``deepmia/data/catalog/migrations``; these classes mirror
them (a test checks that ``alembic upgrade head`` and these models agree).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "Base",
    "CatalogInfo",
    "Patient",
    "Study",
    "Series",
    "Instance",
    "ScanError",
    "Dataset",
    "DatasetItem",
    "Annotation",
    "Prediction",
    "Job",
    "JobOutput",
    "User",
    "Token",
    "AuditEntry",
    "JOB_STATUSES",
    "ROLES",
]

UID = String(64)  # DICOM UIDs are at most 64 characters
#: ``queued``/``cancelled`` are the service queue's (deepmia.jobs); ``pending``/``interrupted`` the scan's.
JOB_STATUSES = ("pending", "queued", "running", "done", "failed", "cancelled", "interrupted")
#: Account roles of the service, least to most rights.
ROLES = ("viewer", "annotator", "admin")


class Base(DeclarativeBase):
    """Declarative base of every catalog table."""


class CatalogInfo(Base):
    """Key/value facts about the catalog itself (e.g. the secret salt of patient pseudonyms)."""

    __tablename__ = "catalog_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Patient(Base):
    """A patient, known only by a pseudonym (a salted hash of the DICOM patient identity)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    sex: Mapped[str | None] = mapped_column(String(16))
    birth_year: Mapped[int | None] = mapped_column(Integer)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A DICOM study (StudyInstanceUID)."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str | None] = mapped_column(Text)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A DICOM series (SeriesInstanceUID)."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    body_part: Mapped[str | None] = mapped_column(String(64))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(UID)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One DICOM file (one SOP instance): where it is, how big, when changed, and its header geometry.

    ``size`` and ``mtime_ns`` are the file's stat at indexing time; a rescan re-reads a file only when they
    changed. ``missing_since`` is set when the file was deleted or can no longer be read as DICOM; the row is
    kept (annotations may point to it) and cleared when the file comes back.
    """

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_series_instance", "series_id", "instance_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)
    position_x: Mapped[float | None] = mapped_column(Float)
    position_y: Mapped[float | None] = mapped_column(Float)
    position_z: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[list[float] | None] = mapped_column(JSON)
    pixel_spacing: Mapped[list[float] | None] = mapped_column(JSON)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    missing_since: Mapped[datetime | None] = mapped_column(DateTime)

    series: Mapped[Series] = relationship(back_populates="instances")


class ScanError(Base):
    """A file a scan could not index, with the problem; kept until the file is fixed or removed."""

    __tablename__ = "scan_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    problem: Mapped[str] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    seen_at: Mapped[datetime] = mapped_column(DateTime)


class Dataset(Base):
    """A named collection of series (e.g. a training set), with a case id and split per member."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    root: Mapped[str | None] = mapped_column(String(1024))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    items: Mapped[list[DatasetItem]] = relationship(back_populates="dataset", cascade="all, delete-orphan")


class DatasetItem(Base):
    """A series' membership in a dataset."""

    __tablename__ = "dataset_items"
    __table_args__ = (UniqueConstraint("dataset_id", "series_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    case_id: Mapped[str] = mapped_column(String(128))
    split: Mapped[str | None] = mapped_column(String(32))

    dataset: Mapped[Dataset] = relationship(back_populates="items")


class Annotation(Base):
    """An annotation of a series or one of its images: a label file, boxes, a class label."""

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str | None] = mapped_column(String(1024))
    label: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict | None] = mapped_column(JSON)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Job(Base):
    """A unit of work (a scan, a training, a prediction run): status, progress, timestamps and error."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    params: Mapped[dict | None] = mapped_column(JSON)
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The service queue's columns (migration 0002): who asked, on which series, how often it was started.
    user: Mapped[str | None] = mapped_column(String(128), index=True)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    log: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class JobOutput(Base):
    """A file a job wrote, recorded only once the job completed (the file is in place before its row exists)."""

    __tablename__ = "job_outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    media_type: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class User(Base):
    """A service account with a role (viewer, annotator, admin)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Token(Base):
    """An API token or browser session of a user: only a salted hash of its secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEntry(Base):
    """Who viewed, downloaded, uploaded or ran what, and when."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime, index=True)
    user: Mapped[str | None] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    object: Mapped[str | None] = mapped_column(String(256))
    detail: Mapped[str | None] = mapped_column(Text)


class Prediction(Base):
    """A model's output for a series: where the output file is and its scores."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    task: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(256))
    path: Mapped[str | None] = mapped_column(String(1024))
    scores: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime)
