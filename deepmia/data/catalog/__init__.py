"""The catalog: a SQLAlchemy database (SQLite file by default, PostgreSQL by URL) indexing DICOM files.

It holds pseudonymous patients, studies, series, images (one row per file), datasets, annotations, predictions
and jobs; pixels stay in their files. The schema is managed by Alembic migrations applied when a catalog opens.

Example:
    >>> from deepmia.data.catalog import open_catalog, scan
    >>> with open_catalog("catalog.sqlite") as catalog:  # doctest: +SKIP
    ...     report = scan(catalog, "dicom/")
    ...     catalog.series()
"""

from .db import DEFAULT_DB, Catalog, catalog_url, head_revision, migrate, open_catalog
from .scan import ScanReport, read_header, scan

__all__ = [
    "DEFAULT_DB",
    "Catalog",
    "ScanReport",
    "catalog_url",
    "head_revision",
    "migrate",
    "open_catalog",
    "read_header",
    "scan",
]
