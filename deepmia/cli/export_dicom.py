"""Commands: deepmia export dicom (issue 13): DICOM SEG/SR of an existing prediction folder."""

from __future__ import annotations

from pathlib import Path

import typer


def export_dicom(
    pred_dir: Path = typer.Argument(..., help="A prediction folder written by `deepmia predict` (with run.json)."),
    source: Path = typer.Argument(
        ..., help="The DICOM series (or study) folder the prediction was made on; for a NIfTI/PNG input, that file "
                  "(with --patient-id or --template)."),
    out_dir: Path = typer.Argument(..., help="Folder for the SEG/SR files (created)."),
    patient_id: str = typer.Option(None, "--patient-id", help="Non-DICOM inputs: the patient's id."),
    study_uid: str = typer.Option(None, "--study-uid", help="Non-DICOM inputs: the study (default: a new one)."),
    template: Path = typer.Option(
        None, "--template", help="Non-DICOM inputs: a DICOM file whose patient and study are used."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Segmentation: also a fractional SEG of PRED_DIR/probabilities/."),
) -> None:
    """Write DICOM SEG (segmentation) and SR (every task) for an existing prediction into OUT_DIR.

    The source series is matched to each predicted input by the series UID that run.json recorded; the objects
    go into the source's study as new series. Exit status: 0 written, 2 bad input (nothing written).
    """
    from deepmia.cli._common import console
    from deepmia.report.dicom_export import export_prediction
    from deepmia.report.dicom_source import DicomIdentity

    identity = DicomIdentity(patient_id or None, study_uid or None, str(template) if template else None)
    if identity.given or identity.study_uid:
        identity = identity.resolved()
    written = export_prediction(pred_dir, source, out_dir, identity=identity, probabilities=probabilities)
    for path in written:
        console.print(str(path), soft_wrap=True, markup=False, highlight=False)
    console.print(f"{len(written)} DICOM file(s) -> {out_dir}", soft_wrap=True, markup=False, highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("dicom")(export_dicom)
