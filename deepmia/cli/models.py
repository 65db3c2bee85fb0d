"""``deepmia models``: the models that ship with deepmia, and their cards."""

from __future__ import annotations

import json

import typer

from deepmia.cli._common import console, print_json


def models(
    name: str = typer.Argument(None, help="A shipped model: print its card (README.md)."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the shipped models (name, task, training data, folder), or print one model's card.

    A shipped model's name works wherever a model directory is asked for: `deepmia predict hippocampus IN OUT`.
    """
    from deepmia.tasks import resolve_model, shipped_models, task_of_model

    if name is not None:
        card = resolve_model(name) / "README.md"
        console.print(card.read_text() if card.is_file() else f"{name}: no model card", markup=False,
                      highlight=False, soft_wrap=True)
        return
    rows = []
    for path in shipped_models():
        plan = json.loads((path / "plan.json").read_text())
        card = path / "README.md"
        summary = next((line for line in card.read_text().splitlines()[1:] if line.strip()), "") if card.is_file() \
            else ""
        rows.append({"name": path.name, "task": task_of_model(path).name, "dataset": plan.get("dataset"),
                     "path": str(path), "summary": summary})
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['name']:26s} {r['task']:9s} {r['dataset'] or '':16s} {r['path']}", markup=False,
                      highlight=False, soft_wrap=True)
    console.print(f"{len(rows)} models; `deepmia models NAME` prints a card, `deepmia predict NAME IN OUT` applies it",
                  markup=False, highlight=False)


def add_commands(app: typer.Typer) -> None:
    """Add ``models`` to the root app."""
    app.command("models")(models)
