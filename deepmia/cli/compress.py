"""Commands: deepmia compress MODEL_DIR --out SMALL_DIR [--distill] [--prune R] (issue 15)."""

from __future__ import annotations

import typer


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
