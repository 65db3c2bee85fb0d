"""Settings of the service: where the catalog, the data and the models are, and its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Settings"]

GIB = 1 << 30


@dataclass
class Settings:
    """What ``deepmia serve`` runs with.

    Attributes:
        db: Catalog database: a SQLite file path or a SQLAlchemy URL (``None``: ``deepmia-catalog.sqlite``).
        data_dir: Where uploads, job outputs and the NIfTI cache are stored.
        models_dir: A folder of model directories offered besides the shipped models.
        workers: Worker processes of the job queue (0: the server queues jobs but runs none).
        max_upload_bytes: Largest upload request (413 beyond).
        max_body_bytes: Largest other request body (413 beyond).
        zip_max_total_bytes: Largest total uncompressed size of an uploaded zip.
        zip_max_ratio: Largest compression ratio of an uploaded zip (and of any member).
        zip_max_files: Most members in an uploaded zip.
        per_user_running: Jobs of one user running at once (the others wait in the queue).
        per_user_active: Jobs of one user queued or running at once (429 beyond).
        session_hours: Lifetime of a browser session.
        secure_cookies: Mark cookies ``Secure`` (set when served over TLS or behind an HTTPS proxy).
        cors_origins: Origins allowed cross-origin requests (none by default: CORS closed).
        deid_key: Secret of the de-identification on upload (default: derived from the catalog's secret salt).
    """

    db: str | None = None
    data_dir: Path = Path("deepmia-data")
    models_dir: Path | None = None
    workers: int = 1
    max_upload_bytes: int = 2 * GIB
    max_body_bytes: int = 1 << 20
    zip_max_total_bytes: int = 8 * GIB
    zip_max_ratio: float = 200.0
    zip_max_files: int = 20000
    per_user_running: int = 2
    per_user_active: int = 1000
    session_hours: float = 12.0
    secure_cookies: bool = False
    cors_origins: list[str] = field(default_factory=list)
    deid_key: str | None = None
