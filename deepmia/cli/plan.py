"""``deepmia plan DATASET``: fingerprint a dataset and write the plan a training run would use."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from deepmia.cli._common import console, parse_duration, print_json, progress


def plan(
    dataset: Path = typer.Argument(..., help="A dataset folder (dataset.json)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the plan JSON here (default: print it)."),
    time_budget: str = typer.Option(None, "--time-budget", help="Training wall-clock budget, e.g. 45m."),
    override: list[str] = typer.Option([], "--set", help="Override a plan field: key=value (JSON value), repeatable."),
    task: str = typer.Option(
        None, "--task", help="Plan for this task (default: the dataset's own; 'register' plans learned registration "
                             "from a segmentation dataset)."),
) -> None:
    """Plan a training run from the data, for any task: what `deepmia train <task>` would start from."""
    from deepmia.data.dataset import Dataset
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks import TASKS

    ds = Dataset.load(dataset)
    if task is None:
        trains = [TASKS.get(n) for n in TASKS.names() if TASKS.get(n).dataset_task == ds.task]
        matches = [t for t in trains if t.plan_task == ds.task] or trains  # the dataset's own task first
        if not matches:
            raise InvalidArgumentError(f"no task trains on {ds.task!r} datasets", path=dataset)
        chosen = matches[0]
    else:
        chosen = TASKS.get(task)
        if chosen.dataset_task != ds.task:
            raise InvalidArgumentError(f"{chosen.name} trains on {chosen.dataset_task} datasets; this one is {ds.task}",
                                       path=dataset)
    if chosen.planner is None:
        raise InvalidArgumentError(f"{chosen.name} has no planner", path=dataset)
    with progress(transient=True) as bar:
        job = bar.add_task("fingerprint", total=len(ds))
        result = chosen.planner(ds, time_budget_s=parse_duration(time_budget), overrides=override,
                                progress=lambda _s, d, t: bar.update(job, completed=d, total=t))
    if out is None:
        print_json(result)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"{chosen.name} plan for {ds.name} ({', '.join(_summary(result))}) -> {out}", soft_wrap=True,
                  markup=False, highlight=False)


def _summary(plan: dict) -> list[str]:
    keys = ("spatial_dims", "patch_size", "input_size", "target_spacing", "batch_size", "network")
    return [f"{k} {plan[k]}" for k in keys if k in plan]


def add_commands(app: typer.Typer) -> None:
    """Add ``plan`` to the root app."""
    app.command("plan")(plan)
