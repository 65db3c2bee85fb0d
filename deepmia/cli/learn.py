"""Learning commands: ``plan``, ``train <task>``, ``predict``, ``evaluate <task>``, and each task's own commands.

Each task's commands live in a CLI module of this package (a fixed list below); each provides
``register(app=, train=, evaluate=)`` and ``predict(model_dir, src, dst, options=)`` over its task package.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import ModuleType

import typer

from deepmia.errors import InvalidArgumentError

# task name in plan.json -> the CLI module (in deepmia.cli) that trains, evaluates and predicts it
TASKS = {
    "segmentation": "segment",
    "classification": "classify",
    "registration": "registration",
    "detection": "detect",
}

train_app = typer.Typer(help="Train a model: deepmia train <task> --dataset DIR --out MODEL_DIR.", no_args_is_help=True)
evaluate_app = typer.Typer(
    help="Score predictions against references: deepmia evaluate <task> ...", no_args_is_help=True
)


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``90s``, ``45m``, ``1.5h`` or a bare number of seconds; None stays None.

    Raises:
        InvalidArgumentError: Not a duration.
    """
    if text is None or text == "":
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidArgumentError(f"time budget {text!r} is not a positive duration like 90s, 45m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _task_module(name: str) -> ModuleType:
    return importlib.import_module(f"deepmia.cli.{name}")


def predict(
    model_dir: Path = typer.Argument(..., help="A trained model directory (with plan.json)."),
    src: Path = typer.Argument(..., help="An input file, or a folder of them."),
    dst: Path = typer.Argument(..., help="Output folder."),
    tta: bool = typer.Option(True, "--tta/--no-tta", help="Test-time augmentation where the task has it."),
    folds: str = typer.Option(None, "--folds", help="Comma-separated folds to ensemble (default: all trained)."),
    figure: bool = typer.Option(False, "--figure", help="Also draw the results as PNG figures."),
    probabilities: bool = typer.Option(
        False, "--probabilities", help="Segmentation: also write class probability maps to OUT/probabilities/."
    ),
    clinical: Path = typer.Option(
        None,
        "--clinical",
        help="Clinical CSV for an image + clinical classification model, joined on case id = file name without suffix.",
    ),
) -> None:
    """Predict with a trained model: the task comes from MODEL_DIR/plan.json."""
    plan_path = model_dir / "plan.json"
    if not plan_path.is_file():
        raise InvalidArgumentError("no plan.json: not a deepmia model directory", path=model_dir)
    try:
        task = json.loads(plan_path.read_text()).get("task")
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"plan.json is not valid JSON: {exc}", path=plan_path) from exc
    name = TASKS.get(task)
    if name is None:
        raise InvalidArgumentError(f"plan.json names task {task!r}, which this deepmia cannot predict", path=plan_path)
    if clinical is not None and name != "classify":
        raise InvalidArgumentError(
            f"--clinical applies to classification models; this is a {task} model",
            path=model_dir,
            fix="leave out --clinical",
        )
    options = {
        "tta": tta,
        "figure": figure,
        "folds": [int(f) for f in folds.split(",")] if folds else None,
        "clinical": clinical,
        "probabilities": probabilities,
    }
    _task_module(name).predict(model_dir, src, dst, options=options)


def register(app: typer.Typer) -> None:
    """Add the learning commands to the root app."""
    from deepmia.cli import plan as plan_cli

    plan_cli.register(app)
    app.add_typer(train_app, name="train")
    app.add_typer(evaluate_app, name="evaluate")
    app.command("predict")(predict)
    for name in TASKS.values():
        _task_module(name).register(app=app, train=train_app, evaluate=evaluate_app)
