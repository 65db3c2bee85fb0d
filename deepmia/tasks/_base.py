"""The task contract: a registry of tasks, the :class:`Predictor` every task implements and its :class:`Result`.

Every delivery path (the CLI, the REST service, the PACS node, Ray batch jobs) talks to tasks only through this
module: :func:`task_of_model` finds the task of a model directory, :func:`load_predictor` builds its predictor,
``predictor.predict(image)`` returns a :class:`Result` in memory, and ``result.write(dst, name)`` /
``result.measurements()`` turn it into files and one table.

Example:
    >>> from deepmia.tasks import TASKS
    >>> TASKS.names()
    ['classify', 'detect', 'register', 'segment']
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from deepmia.engine.batch import MEASUREMENT_COLUMNS
from deepmia.errors import InvalidArgumentError
from deepmia.registry import Registry

__all__ = [
    "Task",
    "TASKS",
    "Predictor",
    "Result",
    "MEASUREMENT_COLUMNS",
    "task_of_model",
    "load_predictor",
    "case_id",
    "resolve_model",
    "shipped_models",
    "file_hash",
    "model_hash",
]



@dataclass(frozen=True)
class Task:
    """One learning task as the delivery layers see it.

    Attributes:
        name: The task's name (``segment``, ``classify``, ...): its package ``deepmia.tasks.<name>``.
        plan_task: The ``task`` field its model directories' ``plan.json`` carry (``segmentation``, ...).
        predictor: Returns the task's :class:`Predictor` class (imported on first use: torch is heavy).
        train_command: The command that trains a model of this task.
        planner: ``planner(dataset_dir, time_budget_s=, overrides=)`` -> the plan as a dict, or None.
        trains_on: The dataset task its training data has (registration trains on segmentation datasets).
    """

    name: str
    plan_task: str
    predictor: Callable[[], type[Predictor]]
    train_command: str
    planner: Callable[..., dict[str, Any]] | None = None
    trains_on: str | None = None

    @property
    def dataset_task(self) -> str:
        """The ``task`` of the dataset.json this task trains on."""
        return self.trains_on or self.plan_task


#: Every task, by name; task packages register themselves in their ``__init__``.
TASKS: Registry[Task] = Registry("task")


#: Where the models that ship with deepmia live (installed with the package).
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"


def shipped_models() -> list[Path]:
    """The model directories installed with deepmia (``deepmia models`` lists them)."""
    if not SHIPPED_MODELS.is_dir():
        return []
    return sorted(p for p in SHIPPED_MODELS.iterdir() if (p / "plan.json").is_file())


def resolve_model(spec: str | os.PathLike[str]) -> Path:
    """A model directory from a path, or from the name of a shipped model (``hippocampus``).

    Raises:
        InvalidArgumentError: Neither an existing folder nor a shipped model's name (the names are listed).
    """
    path = Path(spec)
    if path.is_dir():
        return path
    if path.name == str(spec) and (SHIPPED_MODELS / path.name / "plan.json").is_file():
        return SHIPPED_MODELS / path.name
    names = ", ".join(p.name for p in shipped_models()) or "none"
    raise InvalidArgumentError("no such model directory, nor a shipped model of that name", path=spec,
                               fix=f"shipped models: {names} (`deepmia models` lists them)")


def _plan_of(model_dir: Path) -> dict[str, Any]:
    plan_path = model_dir / "plan.json"
    if not model_dir.is_dir():
        raise InvalidArgumentError("no such model directory", path=model_dir)
    if not plan_path.is_file():
        raise InvalidArgumentError("no plan.json: not a deepmia model directory", path=model_dir)
    try:
        plan = json.loads(plan_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"plan.json is not valid JSON: {exc}", path=plan_path) from exc
    if not isinstance(plan, dict):
        raise InvalidArgumentError("plan.json is not a JSON object", path=plan_path)
    return plan


def task_of_model(model_dir: str | os.PathLike[str]) -> Task:
    """The task of a trained model directory, from the ``task`` field of its ``plan.json``.

    Raises:
        InvalidArgumentError: Not a model directory, an unreadable plan, or a task this deepmia does not know.
    """
    model_dir = resolve_model(model_dir)
    name = _plan_of(model_dir).get("task")
    for task in (TASKS.get(n) for n in TASKS.names()):
        if name in (task.plan_task, task.name):
            return task
    known = ", ".join(TASKS.get(n).plan_task for n in TASKS.names())
    raise InvalidArgumentError(
        f"plan.json names task {name!r}, which this deepmia cannot predict (known: {known})",
        path=model_dir / "plan.json",
    )


def load_predictor(model_dir: str | os.PathLike[str], **options: Any) -> Predictor:
    """Build the predictor of the task ``model_dir`` was trained for.

    Args:
        model_dir: A trained model directory (``plan.json`` + weights).
        **options: Keyword options of that task's predictor (``device=``, ``tta=``, ``folds=``, ...).

    Raises:
        InvalidArgumentError: Not a model directory, an unknown task, or an option the task does not take.
    """
    model_dir = resolve_model(model_dir)
    task = task_of_model(model_dir)
    return task.predictor()(model_dir, **options)


def case_id(image: Any) -> str:
    """The case id of an input image: ``meta["case_id"]``, else its source file's name without suffix, else ""."""
    meta = getattr(image, "meta", {}) or {}
    if meta.get("case_id"):
        return str(meta["case_id"])
    if meta.get("source"):
        from deepmia.io import image_stem

        return image_stem(Path(str(meta["source"])).name)
    return ""


def file_hash(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_hash(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Hashes that identify a model: ``plan`` (plan.json) and ``weights`` (all ``fold_*/*.pt`` together)."""
    model_dir = Path(model_dir)
    weights = hashlib.sha256()
    for p in sorted(model_dir.glob("fold_*/*.pt")):
        weights.update(p.relative_to(model_dir).as_posix().encode())
        weights.update(file_hash(p).encode())
    plan = model_dir / "plan.json"
    return {"plan": file_hash(plan) if plan.is_file() else "", "weights": weights.hexdigest()}


class Result(ABC):
    """What one prediction returns, in memory: the task's outputs plus the source image's identity.

    Subclasses hold the outputs as attributes (a label map, class probabilities, boxes, a transform) and
    implement :meth:`measurements`, :meth:`write` and :meth:`summary`.
    """

    task: ClassVar[str]

    @abstractmethod
    def measurements(self) -> list[dict[str, Any]]:
        """One row per measured quantity: ``case``, ``target``, ``quantity``, ``value``, ``unit``."""

    @abstractmethod
    def write(self, dst: str | os.PathLike[str], name: str, *, formats: Sequence[str] = ()) -> list[Path]:
        """Write this result's files for case ``name`` into the folder ``dst``; returns the paths written.

        Args:
            dst: Output folder (created).
            name: The case's output name (file stem or file name of the input).
            formats: Extra outputs the task offers (e.g. ``figure``, ``probabilities``).
        """

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of the result (what ``--json`` and the service return)."""

    #: Whether the task writes one file for all cases (:meth:`write_table`) besides each case's own files.
    has_table: ClassVar[bool] = False

    @classmethod
    def write_table(cls, results: Sequence[tuple[str, Result]], dst: str | os.PathLike[str]) -> list[Path]:
        """Write the one file of all cases' results (tasks with :attr:`has_table`); the default writes nothing."""
        return []

    def light(self) -> Result:
        """A copy without the images it holds (what :meth:`write_table` and a long batch keep in memory)."""
        return self


class Predictor(ABC):
    """A trained model (or a configured classical method) that predicts in memory.

    Every task's predictor is built as ``Predictor(model_dir, *, device="cpu", runtime="torch", **options)``
    (``runtime``: ``torch``, ``onnx`` or ``openvino``, see :mod:`deepmia.engine.runners`), predicts with
    ``predict(image) -> Result`` (registration: ``predict((fixed, moving))``), and pickles (its networks and
    settings travel to a worker process or a Ray actor).
    """

    task: ClassVar[str]
    #: Inputs per :meth:`predict_many` call in the batch loop (tasks that batch small images raise it).
    batch_size: ClassVar[int] = 1
    #: Output formats the task's results can write besides their default files.
    formats: ClassVar[tuple[str, ...]] = ()

    model_dir: Path | None
    device: Any

    @abstractmethod
    def predict(self, inputs: Any) -> Result:
        """Predict one input (an :class:`~deepmia.image.Image`, or the task's pair/tuple) in memory."""

    def predict_many(self, inputs: Sequence[Any]) -> list[Result]:
        """Predict several inputs (the batch loop's unit); tasks that batch small images override it."""
        return [self.predict(x) for x in inputs]

    def check(self, image: Any, *, path: Any = None) -> None:
        """Refuse an input the model cannot read (channels, dimensions, ...) before predicting: it raises.

        What the model can read but was not trained on is not refused: :meth:`input_warnings` says it, in the
        result.
        """
        return None

    def conform(self, image: Any) -> Any:
        """``image`` in the model's dimensionality where that is lossless.

        A one-slice volume ``(C, X, Y, 1)`` (a single DICOM image read as a series, a 2D NIfTI) becomes the 2D
        image a 2D model takes.
        """
        dims = getattr(getattr(self, "plan", None), "spatial_dims", None)
        if dims == 2 and getattr(image, "spatial_dims", None) == 3 and image.spatial_shape[-1] == 1:
            return image.with_geometry(image.array[..., 0], image.affine)
        return image

    def check_run(self, names: Sequence[str]) -> None:
        """Refuse, before any input is read, a run over inputs ``names`` that cannot work.

        For example a fusion model without its clinical table, or with a table that names none of the inputs.
        """
        return None

    def input_warnings(self, image: Any) -> list[str]:
        """Reasons why an input does not look like the model's training data (see ``tasks._checks``)."""
        return []

    def describe(self) -> dict[str, Any]:
        """What identifies this predictor in a ``run.json``: task, model, hashes, options, device."""
        info: dict[str, Any] = {"task": self.task, "device": str(getattr(self, "device", "cpu"))}
        if self.model_dir is not None:
            info["model"] = str(self.model_dir)
            info["model_name"] = Path(self.model_dir).resolve().name
            info["hashes"] = model_hash(self.model_dir)
        info["options"] = self.options()
        return info

    def options(self) -> dict[str, Any]:
        """The options this predictor runs with (recorded in ``run.json``)."""
        return {}

    def onnx_networks(self) -> list[Any]:
        """The networks ``deepmia export onnx`` exports and ``runtime="onnx"`` replaces (``NetworkSpec`` objects).

        Raises:
            InvalidArgumentError: The predictor has no network to export.
        """
        raise InvalidArgumentError(f"a {self.task} predictor has no network to export", path=self.model_dir)
