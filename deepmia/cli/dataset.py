"""``deepmia dataset``: being built (issue 2); registered so the command tree is fixed."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
