"""``deepmia deid IN OUT``: de-identify DICOM files (PS3.15 basic profile) into a mirrored tree, with a report."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, err_console, progress
from deepmia.errors import InvalidArgumentError, ReadError


def _read_key(key: str | None, key_file: Path | None) -> str | None:
    if key is not None and key_file is not None:
        raise InvalidArgumentError("give --key or --key-file, not both")
    if key_file is None:
        return key
    try:
        text = key_file.read_text().strip()
    except OSError as exc:
        raise ReadError(f"cannot read the key file: {exc.strerror or exc}", path=key_file) from exc
    if not text:
        raise InvalidArgumentError("the key file is empty", fix="write the secret into it")
    return text


def deid(
    src: Path = typer.Argument(..., help="A DICOM file or a folder tree of them."),
    dst: Path = typer.Argument(..., help="Output file or folder (mirrors the input tree); must be new or empty."),
    key: str = typer.Option(
        None, "--key", help="Secret that makes pseudonyms and date shifts the same in every run (random without it)."
    ),
    key_file: Path = typer.Option(None, "--key-file", help="Read the secret from this file (keeps it off `ps`)."),
    report: Path = typer.Option(
        None, "--report", help="Report path (.json or .csv); default: OUT.deid-report.json beside the output."
    ),
) -> None:
    """De-identify DICOM files with the PS3.15 Basic Application Level Confidentiality Profile.

    Non-DICOM files are not copied, files with possible burned-in text are flagged: both are listed in the
    report and printed here. Exit status: 0 every file de-identified, 1 some files not DICOM or failed (listed),
    2 nothing de-identified (no DICOM file, an empty folder) or bad usage.
    """
    from deepmia.deid import check_paths, deidentify_tree, list_inputs

    secret = _read_key(key, key_file)
    check_paths(src, dst)
    files = list_inputs(src)
    if not files:
        raise ReadError("no files found: the folder is empty", path=src, fix="give a DICOM file or a folder of them")
    with progress() as bar:
        task = bar.add_task("de-identifying", total=len(files))
        result = deidentify_tree(src, dst, key=secret, files=files, on_file=lambda _: bar.advance(task))
    report_path = result.write(report or dst.with_name(dst.name + ".deid-report.json"))
    counts = result.counts()
    console.print(
        f"de-identified {counts['deidentified']} files into {dst}; {counts['not_dicom']} not DICOM (not copied), "
        f"{counts['failed']} failed; report: {report_path}"
    )
    for f in result.files:
        if f.status == "failed":
            err_console.print(f"failed: {f.source}: {f.message}")
        elif f.status == "not_dicom":
            err_console.print(f"not DICOM, not copied: {f.source}")
    flagged = result.flagged()
    if flagged:
        err_console.print(
            f"warning: {len(flagged)} files may have identifying text burned into the pixels "
            "(PatientIdentityRemoved=NO); review or clean them:"
        )
        for f in flagged:
            err_console.print(f"  {f.source}: {f.burned_in_risk}")
    if not counts["deidentified"]:
        raise ReadError(f"no DICOM file de-identified ({counts['not_dicom']} not DICOM, {counts['failed']} failed)",
                        path=src, fix=f"see {report_path}")
    if counts["failed"] or counts["not_dicom"]:
        raise typer.Exit(1)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("deid")(deid)
