"""Shared fixtures: the path to ../shared/data (tests that need it are skipped when it is absent, never in CI) and
fresh catalog databases on SQLite and on the test PostgreSQL server (DEEPMIA_TEST_POSTGRES_URL, set by CI)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# canonical: the catalog stores resolved paths, and ../shared may be a link
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test when it is absent (fails in CI, where it must be present)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing in CI")
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


PG_ENV = "DEEPMIA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips (fails in CI) when it is not set."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI (.ci/postgres.sh should export it)")
        pytest.skip(f"{PG_ENV} not set")
    return url


@contextlib.contextmanager
def _fresh_database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(folder / f"catalog-{uuid.uuid4().hex[:8]}.sqlite")
        return
    from sqlalchemy import create_engine, text

    server = postgres_url()
    name = f"deepmia_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def make_database(tmp_path):
    """``make_database(kind)``: the URL of a new empty database, ``sqlite`` (a file) or ``postgres`` (a new database
    on the test server, dropped after the test)."""
    with contextlib.ExitStack() as stack:
        yield lambda kind: stack.enter_context(_fresh_database(kind, tmp_path))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, make_database):
    """A fresh, empty catalog database URL: a SQLite file, or a new database on the test PostgreSQL server."""
    return make_database(request.param)
