"""Fixtures of the service tests: a fresh catalog database on SQLite and (when available) PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

PG_ENV = "DEEPMIA_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test PostgreSQL server's URL; skips (fails in CI) when it is not set."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set in CI (.ci/postgres.sh should export it)")
        pytest.skip(f"{PG_ENV} not set")
    return url


def fresh_database(kind: str, tmp_path):
    """A generator of a new empty database URL of ``kind`` (``sqlite`` or ``postgres``), dropped afterwards."""
    if kind == "sqlite":
        yield str(tmp_path / "catalog.sqlite")
        return
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A fresh, empty catalog database URL: a SQLite file, or a new database on the test PostgreSQL server."""
    yield from fresh_database(request.param, tmp_path)
