"""``deepmia export``: a model to a portable runtime (``export onnx``) or a prediction to DICOM (``export dicom``)."""

from __future__ import annotations

import typer


def add_commands(app: typer.Typer) -> None:
    """Add the ``export`` group and its subcommands to ``app``."""
    from deepmia.cli import export_dicom, export_onnx

    group = typer.Typer(
        help="Export a model to ONNX / OpenVINO, or an existing prediction to DICOM SEG/SR/PDF.",
        no_args_is_help=True,
    )
    export_dicom.add_commands(group)
    export_onnx.add_commands(group)
    if group.registered_commands or group.registered_groups:
        app.add_typer(group, name="export")
