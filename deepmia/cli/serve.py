"""Commands: ``deepmia serve`` (the REST service and web viewer), ``deepmia user`` (accounts), ``deepmia audit``.

``serve`` binds to 127.0.0.1 unless told otherwise; any other address needs ``--allow-remote`` and either TLS
(``--tls-cert`` + ``--tls-key``) or ``--behind-proxy`` (a reverse proxy on the same host terminates TLS; see
docs/service.md).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from deepmia.cli._common import console, print_json
from deepmia.errors import InvalidArgumentError

DB_HELP = "Catalog database: a SQLite file or a URL like postgresql+psycopg://user@host/db " \
          "(default: deepmia-catalog.sqlite in the current folder)."
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

user_app = typer.Typer(help="Service accounts: deepmia user add NAME --role viewer|annotator|admin.",
                       no_args_is_help=True)


def check_bind(host: str, *, allow_remote: bool, tls_cert: Path | None, tls_key: Path | None,
               behind_proxy: bool) -> None:
    """Refuse a non-local address without ``--allow-remote`` and TLS (or a reverse proxy).

    Raises:
        InvalidArgumentError: The address is not local and the settings do not allow it.
    """
    if host in LOCAL_HOSTS:
        return
    if not allow_remote:
        raise InvalidArgumentError(f"--host {host} is not localhost: the service would be reachable from the network",
                                   fix="add --allow-remote with --tls-cert/--tls-key (or --behind-proxy)")
    if bool(tls_cert) != bool(tls_key):
        raise InvalidArgumentError("--tls-cert and --tls-key go together", fix="give both")
    if not tls_cert and not behind_proxy:
        raise InvalidArgumentError(f"--host {host} without TLS: tokens and images would cross the network in clear",
                                   fix="give --tls-cert and --tls-key, or --behind-proxy (see docs/service.md)")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise InvalidArgumentError("no such file", path=path)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (non-local needs --allow-remote + TLS)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    models: Path = typer.Option(None, "--models", help="Folder of model directories offered besides the shipped."),
    data: Path = typer.Option(Path("deepmia-data"), "--data", help="Where uploads and job outputs are stored."),
    workers: int = typer.Option(1, "--workers", min=0, help="Job worker processes (0: queue only)."),
    max_upload_mb: float = typer.Option(2048, "--max-upload-mb", min=0.001, help="Largest upload (413 beyond)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-localhost --host."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="TLS certificate (PEM)."),
    tls_key: Path = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    behind_proxy: bool = typer.Option(False, "--behind-proxy",
                                      help="A reverse proxy terminates TLS (cookies are marked Secure)."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow cross-origin requests from this origin."),
    samples: bool = typer.Option(False, "--samples", help="Store the bundled samples (once) to try the service."),
    per_user_jobs: int = typer.Option(
        None, "--per-user-jobs", min=1,
        help="Jobs of one user running at once (default: all workers up to 2, else all but one)."),
) -> None:
    """Run the REST service and the web viewer (uvicorn); API documentation at /docs."""
    check_bind(host, allow_remote=allow_remote, tls_cert=tls_cert, tls_key=tls_key, behind_proxy=behind_proxy)
    if models is not None and not models.is_dir():
        raise InvalidArgumentError("no such models folder", path=models)
    import uvicorn

    from deepmia.service import Settings, create_app

    settings = Settings(db=db, data_dir=data, models_dir=models, workers=workers,
                        max_upload_bytes=int(max_upload_mb * (1 << 20)),
                        secure_cookies=bool(tls_cert) or behind_proxy, cors_origins=list(cors_origin),
                        per_user_running=per_user_jobs or (workers if workers <= 2 else workers - 1))
    app = create_app(settings)
    if samples:
        from deepmia.service.uploads import load_samples

        load_samples(app.state.catalog, settings)
    scheme = "https" if tls_cert else "http"
    console.print(f"deepmia serve: {scheme}://{host}:{port}/ (API docs at /docs), catalog {app.state.catalog.url}, "
                  f"{workers} worker(s)", soft_wrap=True, highlight=False, markup=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None, proxy_headers=behind_proxy,
                forwarded_allow_ips="127.0.0.1" if behind_proxy else None)


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="User name (letters, digits, . _ - @)."),
    role: str = typer.Option(..., "--role", help="viewer, annotator or admin."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Add a user; prints its API token once (only a salted hash is stored)."""
    from deepmia.data.catalog import open_catalog
    from deepmia.service.accounts import add_user

    with open_catalog(db) as catalog:
        token = add_user(catalog, name, role)
    print(token)


@user_app.command("token")
def user_token(
    name: str = typer.Argument(..., help="User name."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Make another API token for an existing user; prints it once."""
    from sqlalchemy import select

    from deepmia.data.catalog import open_catalog
    from deepmia.data.catalog.models import User
    from deepmia.service.accounts import new_token

    with open_catalog(db) as catalog:
        with catalog.session() as s:
            user_id = s.scalar(select(User.id).where(User.name == name))
        if user_id is None:
            raise InvalidArgumentError(f"no user {name!r}", fix="deepmia user add NAME --role ROLE")
        print(new_token(catalog, user_id))


def audit(
    db: str = typer.Option(None, "--db", help=DB_HELP),
    user: str = typer.Option(None, "--user", help="Only this user's actions."),
    action: str = typer.Option(None, "--action", help="Only this action (view, download, upload, run, login, ...)."),
    since: datetime = typer.Option(None, "--since", help="Only from this time on (UTC), e.g. 2026-12-01T08:00."),
    limit: int = typer.Option(1000, "--limit", min=1, help="At most this many rows, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """The service's audit log: who viewed, downloaded, uploaded or ran what, and when."""
    from deepmia.data.catalog import open_catalog
    from deepmia.service.accounts import audit_rows

    with open_catalog(db) as catalog:
        rows = audit_rows(catalog, user=user, action=action, since=since, limit=limit)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['time']:%Y-%m-%d %H:%M:%S}  {r['user'] or '-'}  {r['action']}  {r['object'] or ''}  "
                      f"{r['detail'] or ''}", soft_wrap=True, highlight=False, markup=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve)
    app.add_typer(user_app, name="user")
    app.command("audit")(audit)
