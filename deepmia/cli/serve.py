"""Commands: deepmia serve, deepmia user, deepmia audit (issue 14)."""

from __future__ import annotations

import typer


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
