"""``deepmia plan DATASET``: fingerprint a dataset and write the plan a training run would use."""

from __future__ import annotations

from pathlib import Path

import typer

from deepmia.cli._common import console, print_json, progress


def plan(
    dataset: Path = typer.Argument(..., help="A dataset folder (dataset.json)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the plan JSON here (default: print it)."),
    time_budget: str = typer.Option(None, "--time-budget", help="Training wall-clock budget, e.g. 45m."),
    override: list[str] = typer.Option([], "--set", help="Override a plan field: key=value (JSON value), repeatable."),
) -> None:
    """Plan a run from the data: spacing, normalisation, patch, network, batch, loss, schedule."""
    from deepmia.cli._common import parse_duration
    from deepmia.data.dataset import Dataset
    from deepmia.errors import InvalidArgumentError

    ds = Dataset.load(dataset)
    if ds.task != "segmentation":
        raise InvalidArgumentError(f"planning for task {ds.task!r} is done by `deepmia train {ds.task}`", path=dataset)
    from deepmia.tasks.segment.train import plan_dataset

    with progress(transient=True) as bar:
        job = bar.add_task("fingerprint", total=len(ds))
        result = plan_dataset(
            ds,
            time_budget_s=parse_duration(time_budget),
            overrides=override,
            progress=lambda _s, d, t: bar.update(job, completed=d, total=t),
        )
    if out is None:
        print_json(result.model_dump())
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    console.print(
        f"plan for {ds.name}: {result.spatial_dims}D, patch {result.patch_size}, spacing {result.target_spacing}, "
        f"batch {result.batch_size}, {len(result.network_params['filters'])} stages -> {out}",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the root app."""
    app.command("plan")(plan)
