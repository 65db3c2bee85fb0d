"""One model-card writer (``README.md`` of a model directory) for every task.

A card is built from the JSON files of the model directory (``plan.json``, ``metrics.json``, ``split.json``,
``calibration.json``, ``dataset_info.json``) in the same sections for every task: a summary, data and licence,
plan, validation metrics with their intervals, how it was trained, intended use and limits, and how to use it.
Each task contributes the lines that only it knows (:mod:`deepmia.report.card_sections`); the shared lines
(licence, split counts, the research-use statement) are written once here.

Text that no JSON file holds (the exact recipe, a comparison with another method, a note on stored weights)
lives in ``card_notes.json`` of the model directory, ``{"section title": "markdown"}``; the writer puts each note
at the end of its section, so a regenerated card keeps it.

Example:
    >>> from deepmia.report.model_card import SECTION_TITLES
    >>> SECTION_TITLES[:2]
    ('Data', 'Plan')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deepmia._validate import look_up_option
from deepmia.report.card_base import CardContext, Sections, ci, kv

__all__ = ["CardContext", "SECTION_TITLES", "TASKS", "ci", "kv", "render_model_card", "write_model_card"]

SECTION_TITLES = ("Data", "Plan", "Validation metrics", "Training", "Intended use and limits", "Use")
TASKS = ("classify", "segment", "detect", "register")
_TASK_ALIASES = {"classification": "classify", "segmentation": "segment", "detection": "detect",
                 "registration": "register"}
NOTES_FILE = "card_notes.json"
DATASET_FILE = "dataset_info.json"

MEDMNIST_ATTRIBUTION = (
    "Attribution: MedMNIST v2 (Yang J. et al., 'MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification', Scientific Data 10:41, 2023; https://medmnist.com), licensed CC BY 4.0, and "
    "the source datasets it derives from. The images were not modified other than resizing and intensity "
    "standardisation at training time."
)
RESEARCH_USE = "Research use only: not a medical device, not validated for clinical decisions."


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _dataset_info(dataset: Any) -> dict[str, Any]:
    """``{"name", "license", "source", "description"}`` from a :class:`~deepmia.data.dataset.Dataset` or a mapping."""
    if dataset is None:
        return {}
    spec = getattr(dataset, "spec", None)
    if spec is not None:
        return {"name": spec.name, "license": spec.license, "source": spec.source, "description": spec.description}
    return {k: dataset.get(k) for k in ("name", "license", "source", "description") if dataset.get(k) is not None}


def load_context(model_dir: str | Path, *, task: str, dataset: Any = None,
                 notes: Mapping[str, str] | None = None) -> CardContext:
    """Read a model directory's JSON files; ``dataset`` and ``notes`` (when given) are stored there for later cards.

    Raises:
        InvalidArgumentError: ``task`` is not a task with a card, or the directory has no ``plan.json``.
    """
    from deepmia.errors import InvalidArgumentError

    task = look_up_option(_TASK_ALIASES.get(task, task), TASKS, what="task")
    d = Path(model_dir)
    if not (d / "plan.json").is_file():
        raise InvalidArgumentError("no plan.json: not a model directory", path=d,
                                   fix="write the model card after the plan and metrics are written")
    info = _dataset_info(dataset)
    if info:
        (d / DATASET_FILE).write_text(json.dumps(info, indent=1) + "\n")
    if notes:
        stored = {**_read(d / NOTES_FILE), **notes}
        (d / NOTES_FILE).write_text(json.dumps(stored, indent=1) + "\n")
    return CardContext(
        model_dir=d, task=task, plan=_read(d / "plan.json"), metrics=_read(d / "metrics.json"),
        split=_read(d / "split.json"), dataset=_read(d / DATASET_FILE), notes=_read(d / NOTES_FILE),
        calibration=_read(d / "calibration.json"),
    )


# ----------------------------------------------------------------------------------------------- shared sections
def data_lines(ctx: CardContext) -> list[str]:
    """Dataset, description, source and licence (with the MedMNIST attribution where it applies)."""
    info = ctx.dataset
    description = str(info.get("description") or "").rstrip(".")
    lines = [f"- Dataset: {ctx.dataset_name}" + (f". {description}." if description else ".")]
    lines.append(f"- Source: {info.get('source') or 'see the dataset folder'}")
    lines.append(f"- Licence of the training data: {info.get('license') or 'unknown: see the dataset'}")
    if "medmnist" in json.dumps(info).lower():
        lines.append(f"- {MEDMNIST_ATTRIBUTION}")
    return lines


def split_line(ctx: CardContext, *, unit: str = "cases") -> list[str]:
    """How many cases each split holds, with where the ids are."""
    s = ctx.split
    if not s or ctx.task == "segment":  # segmentation: cross-validation folds, said by its own section
        return []
    counts = [f"{len(s.get(k) or [])} {name}" for k, name in (("train", "train"), ("val", "validation"),
                                                              ("test", "test")) if k in s]
    calibration = " and calibration" if ctx.task == "classify" else ""
    test = f" (the test {unit} were held out from training, model selection{calibration})" if s.get("test") else ""
    return [f"- Split ({unit}): {', '.join(counts)}; ids in `split.json`{test}."]


def limit_lines(ctx: CardContext) -> list[str]:
    """The limits every model shares."""
    return [
        f"- {RESEARCH_USE} A clinician must review every result.",
        "- Inputs must resemble the training data (same modality, dimensionality, channels, field of view and "
        "resolution); performance on other scanners, protocols, sites or populations is unknown.",
    ]


def use_lines(ctx: CardContext) -> list[str]:
    """How to apply the model (registration models say it in their own section)."""
    if ctx.task == "register":
        return []
    return ["`deepmia predict MODEL_DIR IN OUT` applies the model (`--figure` also draws a figure per input)."]


def _sections() -> dict[str, Callable[[CardContext], Sections]]:
    from deepmia.report import card_sections

    return {"classify": card_sections.classify, "segment": card_sections.segment,
            "detect": card_sections.detect, "register": card_sections.register}


def render_model_card(ctx: CardContext) -> str:
    """The card's markdown: the task's sections in the shared order, shared lines and notes added."""
    part = _sections()[ctx.task](ctx)
    shared = {
        "Data": data_lines(ctx) + split_line(ctx, unit="images" if ctx.task == "detect" else "cases"),
        "Intended use and limits": limit_lines(ctx),
        "Use": use_lines(ctx),
    }
    lines = [f"# {part.title}", ""]
    for paragraph in part.summary:
        lines += [paragraph, ""]
    for title in SECTION_TITLES:
        body = shared.get(title, []) + part.body.get(title, [])
        note = ctx.notes.get(title)
        if not body and not note:
            continue
        while body and not body[-1]:
            body = body[:-1]
        lines += [f"## {title}", "", *body, ""]
        if note:
            lines += [note.rstrip(), ""]
    for title, note in ctx.notes.items():
        if title not in SECTION_TITLES:
            lines += [f"## {title}", "", note.rstrip(), ""]
    return "\n".join(lines)


def write_model_card(model_dir: str | Path, *, task: str, dataset: Any = None,
                     notes: Mapping[str, str] | None = None) -> Path:
    """Write ``model_dir/README.md`` from the model directory's JSON files.

    Args:
        model_dir: The model directory (``plan.json`` and ``metrics.json`` already written).
        task: ``classify``, ``segment``, ``detect`` or ``register`` (the plan's ``classification`` etc. too).
        dataset: The training data: a :class:`~deepmia.data.dataset.Dataset` or a mapping with ``name``,
            ``license``, ``source``, ``description``; stored as ``dataset_info.json`` so later cards (after
            ``deepmia evaluate``) keep it. ``None`` reads the stored one.
        notes: Hand-written markdown per section title, merged into ``card_notes.json``.

    Returns:
        The card's path.

    Raises:
        InvalidArgumentError: Unknown task, or no ``plan.json`` in ``model_dir``.
    """
    ctx = load_context(model_dir, task=task, dataset=dataset, notes=notes)
    if ctx.task == "segment":
        from deepmia.report.card_sections import collect_segment_folds

        ctx.metrics = collect_segment_folds(ctx.model_dir)
    path = ctx.model_dir / "README.md"
    path.write_text(render_model_card(ctx))
    return path
