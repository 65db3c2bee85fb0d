"""Opening the catalog database: URL handling, Alembic migrations, sessions and queries.

The catalog is a SQLite file by default (``deepmia-catalog.sqlite`` in the current directory) or any SQLAlchemy
URL, e.g. ``postgresql+psycopg://user@host/db``. Opening a catalog applies the Alembic migrations up to ``head``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from deepmia.errors import CatalogError, InvalidArgumentError

from .models import CatalogInfo, Instance, Job, Patient, ScanError, Series, Study

__all__ = ["DEFAULT_DB", "Catalog", "catalog_url", "migrate", "open_catalog"]

DEFAULT_DB = Path("deepmia-catalog.sqlite")
"""Default catalog file, relative to the current directory."""

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def catalog_url(db: str | Path | None = None) -> str:
    """The SQLAlchemy URL of a catalog given as a URL, a SQLite file path, or ``None`` for :data:`DEFAULT_DB`.

    Args:
        db: ``dialect[+driver]://...`` URL, or a path to a SQLite file (made absolute).

    Returns:
        A SQLAlchemy URL string.
    """
    if db is None:
        db = DEFAULT_DB
    text = str(db)
    if "://" in text:
        return text
    if not text.strip():
        raise InvalidArgumentError("empty catalog location", fix="give a file path or a database URL")
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the scan's writer; a kill leaves a valid file
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine_for(url: str) -> Engine:
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise CatalogError(f"cannot open catalog database: {exc}", path=url,
                           fix="use a SQLite file path or a URL like postgresql+psycopg://user@host/db") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, *, revision: str = "head") -> str | None:
    """Apply the catalog's Alembic migrations up to ``revision``.

    Args:
        engine: Engine of the catalog database.
        revision: Target revision (``head`` for the newest schema).

    Returns:
        The database's revision after migrating.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise CatalogError(f"cannot migrate the catalog database: {exc}", path=engine.url.render_as_string()) from exc


def head_revision() -> str | None:
    """The newest revision of the catalog schema shipped with this deepmia."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


class Catalog:
    """An open catalog database.

    Use :func:`open_catalog` to get one (it migrates the schema). ``with catalog.session() as s:`` gives a
    session that commits on success and rolls back on error.

    Args:
        engine: Engine of a migrated catalog database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on an exception."""
        with self._sessions.begin() as session:
            yield session

    def salt(self) -> str:
        """This catalog's secret salt for patient pseudonyms (made once, when first asked)."""
        with self.session() as s:
            row = s.get(CatalogInfo, "pseudonym_salt")
            if row is None:
                row = CatalogInfo(key="pseudonym_salt", value=secrets.token_hex(32))
                s.add(row)
            return row.value

    def counts(self) -> dict[str, int]:
        """Number of patients, studies, series, present images and recorded scan errors."""
        with self.session() as s:
            return {
                "patients": s.scalar(select(func.count(Patient.id))),
                "studies": s.scalar(select(func.count(Study.id))),
                "series": s.scalar(select(func.count(Series.id))),
                "images": s.scalar(select(func.count(Instance.id)).where(Instance.missing_since.is_(None))),
                "errors": s.scalar(select(func.count(ScanError.id))),
            }

    def series(self, *, study_uid: str | None = None, modality: str | None = None) -> list[dict]:
        """Series with at least one present image, with their study, patient pseudonym and image count.

        Args:
            study_uid: Only the series of this study.
            modality: Only series of this modality (e.g. ``MR``).

        Returns:
            One dict per series, ordered by patient, study and series number.
        """
        query = (
            select(
                Patient.pseudonym, Study.study_uid, Study.study_date, Series.series_uid, Series.series_number,
                Series.modality, Series.description, func.count(Instance.id).label("images"),
            )
            .join(Series.study).join(Study.patient).join(Series.instances)
            .where(Instance.missing_since.is_(None))
            .group_by(Patient.pseudonym, Study.study_uid, Study.study_date, Series.series_uid, Series.series_number,
                      Series.modality, Series.description)
            .order_by(Patient.pseudonym, Study.study_uid, Series.series_number, Series.series_uid)
        )
        if study_uid is not None:
            query = query.where(Study.study_uid == study_uid)
        if modality is not None:
            query = query.where(Series.modality == modality)
        with self.session() as s:
            return [dict(row._mapping) for row in s.execute(query)]

    def studies(self) -> list[dict]:
        """Studies with at least one present image, with patient pseudonym, series and image counts."""
        query = (
            select(
                Patient.pseudonym, Study.study_uid, Study.study_date, Study.description,
                func.count(func.distinct(Series.id)).label("series"), func.count(Instance.id).label("images"),
            )
            .join(Study.patient).join(Study.series).join(Series.instances)
            .where(Instance.missing_since.is_(None))
            .group_by(Patient.pseudonym, Study.study_uid, Study.study_date, Study.description)
            .order_by(Patient.pseudonym, Study.study_date, Study.study_uid)
        )
        with self.session() as s:
            return [dict(row._mapping) for row in s.execute(query)]

    def errors(self, *, under: str | Path | None = None) -> list[dict]:
        """Recorded scan errors (path, kind, problem), optionally only those below the folder ``under``."""
        query = select(ScanError.path, ScanError.kind, ScanError.problem).order_by(ScanError.path)
        if under is not None:
            query = query.where(ScanError.path.startswith(_folder_prefix(under), autoescape=True))
        with self.session() as s:
            return [dict(row._mapping) for row in s.execute(query)]

    def jobs(self, *, kind: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of one kind."""
        query = select(Job).order_by(Job.id.desc())
        if kind is not None:
            query = query.where(Job.kind == kind)
        with self.session() as s:
            return list(s.scalars(query))


def _folder_prefix(folder: str | Path) -> str:
    """``folder`` as an absolute path ending in the separator (so ``/a/b`` does not match ``/a/bc``)."""
    return str(Path(folder).resolve()).rstrip("/") + "/"


def open_catalog(db: str | Path | None = None, *, upgrade: bool = True) -> Catalog:
    """Open (and create, for SQLite) a catalog, migrating its schema to the newest revision.

    Args:
        db: Database URL or SQLite file path; ``None`` for :data:`DEFAULT_DB` in the current directory.
        upgrade: Apply pending Alembic migrations (``alembic upgrade head``). Without it, a catalog whose schema
            is not the newest is refused.

    Returns:
        The open :class:`Catalog`.

    Raises:
        CatalogError: The database cannot be reached, or its schema is outdated and ``upgrade`` is false.
    """
    url = catalog_url(db)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        parent = Path(url.removeprefix("sqlite:///")).parent
        if not parent.is_dir():
            raise CatalogError("folder of the catalog file does not exist", path=parent, fix="create it first")
    engine = engine_for(url)
    if upgrade:
        migrate(engine)
    else:
        from alembic.runtime.migration import MigrationContext

        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current != head_revision():
            engine.dispose()
            raise CatalogError(f"catalog schema is at revision {current}, not {head_revision()}",
                               path=url, fix="run `deepmia catalog migrate`")
    return Catalog(engine)
