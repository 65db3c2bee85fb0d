"""``deepmia catalog``: index DICOM trees into the catalog database and query it.

The database is an argument, never an environment variable: ``--db`` takes a SQLite file path or a SQLAlchemy URL
(``postgresql+psycopg://user@host/db``); without it, ``deepmia-catalog.sqlite`` in the current directory is used.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import typer

from deepmia.cli._common import console, err_console, print_json, progress

# Round brackets: "[default: ...]" would be read as rich markup and vanish from --help.
DEFAULT_DB = "deepmia-catalog.sqlite in the current folder"
DB_HELP = (
    "Catalog database: a SQLite file or a URL like postgresql+psycopg://user@host/db "
    f"(default: {DEFAULT_DB})."
)

catalog_app = typer.Typer(
    name="catalog",
    help=f"Index DICOM folders into the catalog database (SQLite or PostgreSQL) and query it. The database is "
    f"--db on each command (default: {DEFAULT_DB}).",
    no_args_is_help=True,
)


def _cell(value: Any, width: int = 0, align: str = "<") -> str:
    """A table cell: ``?`` for a missing value, ISO 8601 for a date, else the value's text; padded to ``width``.

    Never a format spec applied to the value itself: ``f"{date:10}"`` calls ``date.strftime("10")`` and prints "10".
    """
    if value is None or value == "":
        text = "?"
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value)
    return f"{text:{align}{width}}"


def _open(db: str | None):
    from deepmia.data.catalog import open_catalog

    return open_catalog(db)


@catalog_app.command()
def scan(
    folder: Path = typer.Argument(..., help="Folder to index (recursively)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    workers: int = typer.Option(None, "--workers", "-j", min=1, help="Header-parsing processes (default: CPU count)."),
    batch_size: int = typer.Option(200, "--batch-size", min=1, help="Files committed per database transaction."),
    ray: str = typer.Option(None, "--ray", help="Parse headers as tasks on this Ray cluster (HOST:PORT or auto); "
                                                "the files must be at the same paths on every node."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Index the DICOM files below FOLDER; unchanged files are skipped, bad files are recorded and listed.

    Exit status: 0 every file indexed, 1 some files not indexed (listed), 2 none indexed (an empty folder, no
    DICOM file) or bad usage.
    """
    from deepmia.data.catalog import scan as run_scan
    from deepmia.errors import ReadError

    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        raise ReadError("no files found: the folder is empty", path=folder,
                        fix="give the folder holding the DICOM files")
    reader = None
    if ray is not None:
        from deepmia.distributed.scan import ray_header_reader

        reader = ray_header_reader(ray)
    with _open(db) as catalog, progress() as bar:
        task = bar.add_task(f"scanning {folder}", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = run_scan(catalog, folder, workers=workers, batch_size=batch_size, on_progress=on_progress,
                          reader=reader)
    if as_json:
        print_json({**report.summary(), "errors": report.errors})
    else:
        _print_scan(report)
    if report.errors and len(report.errors) >= report.files:
        raise ReadError(f"no DICOM file indexed: all {report.files} files below the folder are not indexed",
                        path=folder, fix="see the reasons listed, or deepmia catalog errors")
    if report.errors:
        raise typer.Exit(1)


def _print_scan(report: Any) -> None:
    console.print(
        f"{report.root}: {report.files} files, {report.read} read, {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.missing} missing, {len(report.errors)} not indexed "
        f"({report.seconds:.1f} s, job {report.job_id})"
    )
    if report.errors:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(e["kind"] for e in report.errors).items()))
        err_console.print(f"not indexed: {kinds}", highlight=False, soft_wrap=True)
        for error in report.errors:
            err_console.print(
                f"  {error['path']}: {error['kind']}: {error['problem']}", highlight=False, soft_wrap=True
            )


@catalog_app.command("list")
def list_studies(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Studies in the catalog, with pseudonymous patient, date, series and image counts."""
    with _open(db) as catalog:
        studies, counts = catalog.studies(), catalog.counts()
    if as_json:
        print_json({"counts": counts, "studies": studies})
        return
    for s in studies:
        console.print(f"{_cell(s['pseudonym'])[:12]}  {_cell(s['study_date'], 10)}  {s['study_uid']}  "
                      f"{s['series']} series  {s['images']} images  {s['description'] or ''}",
                      highlight=False, soft_wrap=True)
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()), highlight=False, soft_wrap=True)


@catalog_app.command("series")
def list_series(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    study: str = typer.Option(None, "--study", help="Only the series of this StudyInstanceUID."),
    modality: str = typer.Option(None, "--modality", help="Only series of this modality, e.g. MR."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Series in the catalog, with modality, number, description and image count."""
    with _open(db) as catalog:
        series = catalog.series(study_uid=study, modality=modality)
    if as_json:
        print_json(series)
        return
    for s in series:
        console.print(f"{s['series_uid']}  {_cell(s['modality'], 4)} #{_cell(s['series_number'], 4)} "
                      f"{_cell(s['images'], 5, '>')} images  {s['description'] or ''}", highlight=False, soft_wrap=True)


@catalog_app.command("errors")
def list_errors(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    under: Path = typer.Option(None, "--under", help="Only files below this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Files the scans could not index, with the problem."""
    with _open(db) as catalog:
        errors = catalog.errors(under=under)
    if as_json:
        print_json(errors)
        return
    for error in errors:
        console.print(f"{error['path']}: {error['kind']}: {error['problem']}", highlight=False, soft_wrap=True)


@catalog_app.command()
def migrate(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    revision: str = typer.Option("head", "--revision", help="Alembic revision to upgrade to."),
) -> None:
    """Create the catalog database or bring its schema up to date (alembic upgrade)."""
    from deepmia.data.catalog import catalog_url
    from deepmia.data.catalog import migrate as run_migrate
    from deepmia.data.catalog.db import engine_for

    engine = engine_for(catalog_url(db))
    try:
        current = run_migrate(engine, revision=revision)
    finally:
        engine.dispose()
    console.print(
        f"{engine.url.render_as_string(hide_password=True)}: schema at revision {current}",
        highlight=False, soft_wrap=True,
    )


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(catalog_app, name="catalog")
