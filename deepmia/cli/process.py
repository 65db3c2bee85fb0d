"""``deepmia process``: being built (issue 3); registered so the command tree is fixed."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
