"""Helpers shared by CLI modules: console output and progress bars."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# soft_wrap: a long line (a result followed by its output path) is never broken mid-sentence at the terminal width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def progress(transient: bool = False) -> Progress:
    """A progress bar on stderr (so ``--json`` output on stdout stays clean)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not sys.stderr.isatty(),
    )


def print_json(data: Any) -> None:
    """Print JSON to stdout, unstyled."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``90s``, ``45m``, ``1.5h`` or a bare number of seconds; None stays None.

    Raises:
        InvalidArgumentError: Not a duration.
    """
    from deepmia.errors import InvalidArgumentError

    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidArgumentError(f"time budget {text!r} is not a positive duration like 90s, 45m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def require_model(model_dir: Any, task: str, command: str) -> None:
    """Refuse a model directory of another task with a sentence (not the plan's validation errors).

    Args:
        model_dir: The model directory given on the command line.
        task: The task ``command`` needs (a :data:`deepmia.tasks.TASKS` name: ``classify``, ``segment``, ...).
        command: The command, as the user typed it (``explain``, ``evaluate classify``).

    Raises:
        InvalidArgumentError: Not a model directory, or a model of another task:
            ``explain needs a classification model (this is a segmentation model)``.
    """
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks import TASKS, task_of_model

    found, wanted = task_of_model(model_dir), TASKS.get(task)
    if found.name != wanted.name:
        raise InvalidArgumentError(
            f"{command} needs a {wanted.plan_task} model (this is a {found.plan_task} model)", path=model_dir,
            fix=f"give a model trained by '{wanted.train_command}'; 'deepmia predict' runs this one",
        )


def write_card(model_dir: Any, task: str, dataset_dir: Any = None) -> None:
    """Write (or refresh) a model directory's card, ``README.md``, after training or recording metrics."""
    from deepmia.data.dataset import Dataset
    from deepmia.report.model_card import write_model_card

    dataset = Dataset.load(dataset_dir) if dataset_dir is not None else None
    write_model_card(model_dir, task=task, dataset=dataset)
