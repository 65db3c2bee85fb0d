"""Commands: deepmia pacs listen|send|pull (issue 13)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from deepmia.cli._common import console, err_console

pacs_app = typer.Typer(
    name="pacs",
    help="DICOM node: receive studies and send SEG/SR back (listen), send files (send), pull a study (pull), "
    "what a node holds (status).",
    no_args_is_help=True,
)
DB_HELP = ("Catalog database where jobs and predictions are recorded: a SQLite file or a URL like "
           "postgresql+psycopg://user@host/db (default: deepmia-catalog.sqlite in the current folder).")


class _Stderr(logging.StreamHandler):
    """A log handler writing to the current ``sys.stderr`` (not the one at creation)."""

    deepmia_cli = True

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _logging(verbose: bool) -> None:
    ours = logging.getLogger("deepmia.pacs")
    if not any(getattr(h, "deepmia_cli", False) for h in ours.handlers):  # once per process
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.INFO if verbose else logging.WARNING)


@pacs_app.command()
def listen(
    config: Path = typer.Option(..., "--config", "-c", help="The node's YAML file (see deepmia/pacs/example.yaml)."),
    db: str = typer.Option(None, "--db", help=DB_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every association (pynetdicom's log)."),
) -> None:
    """Run the DICOM node until Ctrl-C: receive, route complete series to models, send the results.

    Exit status: 0 stopped by Ctrl-C, 2 a bad configuration file (the message names the key) or port in use.
    """
    from deepmia.data.catalog import open_catalog
    from deepmia.errors import InvalidArgumentError
    from deepmia.pacs.config import load_config
    from deepmia.pacs.node import PacsNode

    settings = load_config(config)
    _logging(verbose)
    with open_catalog(db) as catalog:
        try:
            PacsNode(settings, catalog).serve_forever()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
                                       path=config, fix="choose a free port (key 'port')") from None


@pacs_app.command()
def send(
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (sent recursively)."),
    to: str = typer.Option(..., "--to", help="AE@host:port (C-STORE) or a DICOMweb root URL (STOW-RS)."),
    calling_ae: str = typer.Option("DEEPMIA", "--calling-ae", help="Our AE title."),
    timeout: float = typer.Option(30.0, "--timeout", min=1, help="Network timeout in seconds."),
) -> None:
    """Send DICOM files to a PACS. Exit status: 0 all sent, 1 some refused (listed), 2 none sent."""
    from deepmia.pacs.network import list_files
    from deepmia.pacs.network import send as send_files

    files = list_files(paths)
    report = send_files(files, to, calling_ae=calling_ae, timeout=timeout)
    for path, reason in report.failed:
        err_console.print(f"not sent {path}: {reason}", markup=False, highlight=False)
    console.print(f"{len(report.sent)} of {len(files)} file(s) sent to {to}", markup=False, highlight=False)
    if report.failed:
        raise typer.Exit(1 if report.sent else 2)


@pacs_app.command()
def pull(
    source: str = typer.Option(..., "--from", help="AE@host:port (C-GET, or C-MOVE with --move-port) or a DICOMweb "
                               "root URL (QIDO/WADO-RS)."),
    study: str = typer.Option(..., "--study", help="StudyInstanceUID of the study to retrieve."),
    out: Path = typer.Option(..., "--out", help="Folder to write into (one sub-folder per series)."),
    calling_ae: str = typer.Option("DEEPMIA", "--calling-ae", help="Our AE title."),
    move_port: int = typer.Option(
        None, "--move-port", min=1, max=65535,
        help="C-MOVE instead of C-GET: receive on this port, as --calling-ae (the PACS must know both)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Network timeout in seconds."),
) -> None:
    """Retrieve a study from a PACS into OUT/<SeriesInstanceUID>/. Exit status: 0 retrieved, 2 nothing."""
    from deepmia.pacs.config import parse_address
    from deepmia.pacs.network import pull_dicom, pull_dicom_move, pull_dicomweb

    if source.startswith(("http://", "https://")):
        files = pull_dicomweb(study, source, out, timeout=timeout)
    elif move_port is not None:
        files = pull_dicom_move(study, parse_address(source), out, port=move_port, calling_ae=calling_ae,
                                timeout=timeout)
    else:
        files = pull_dicom(study, parse_address(source), out, calling_ae=calling_ae, timeout=timeout)
    series = {p.parent.name for p in files}
    console.print(f"{len(files)} instance(s) of {len(series)} series -> {out}", markup=False, highlight=False)


@pacs_app.command()
def status(
    config: Path = typer.Option(..., "--config", "-c", help="The node's YAML file (its storage folder is read)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What the node holds: series routed or not, deliveries queued, sent or failed, quarantined instances."""
    from deepmia.cli._common import print_json
    from deepmia.pacs.config import load_config
    from deepmia.pacs.status import node_status

    report = node_status(load_config(config).storage)
    if as_json:
        print_json(report)
        return
    series, counts = report["series"], report["deliveries"]["counts"]
    lines = [f"storage {report['storage']}",
             f"series: {series['routed']} routed, {series['unrouted']} unrouted, {series['waiting']} waiting",
             f"deliveries: {counts['queued']} queued, {counts['sent']} sent, {counts['failed']} failed"]
    for d in report["deliveries"]["not_sent"]:
        when = f", next try in {d['next_try_in_s']:.0f} s" if d["next_try_in_s"] is not None else ""
        lines.append(f"  job {d['job']} -> {d['destination']}: {d['status']} after {d['attempts']} attempt(s)"
                     f"{when}; last error: {d['error']}")
    lines.append(f"quarantine: {len(report['quarantine'])} instance(s)")
    lines += [f"  {Path(q['file']).name} from {q['calling_ae']}: {q['reason']}" for q in report["quarantine"]]
    console.print("\n".join(lines), markup=False, highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(pacs_app, name="pacs")
