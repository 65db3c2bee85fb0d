"""Plan helpers shared by every task: ``key=value`` overrides of a validated pydantic plan, and loading plan files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from deepmia._validate import look_up_option
from deepmia.data.dataset import format_validation_error
from deepmia.errors import InvalidArgumentError

__all__ = ["StrictModel", "apply_overrides", "check_plan_task", "load_plan_file"]

P = TypeVar("P", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every plan section: unknown fields are refused and assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

# Sections whose keys are free-form parameters of a registered component (any key may be added).
OPEN_SECTIONS = ("network_params", "loss_params")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _split(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise InvalidArgumentError(f"plan override {text!r} is not key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def apply_overrides(plan: P, overrides: Sequence[str] | Mapping[str, Any]) -> P:
    """Return a copy of ``plan`` with fields overridden: ``["schedule.lr=0.001", "patch_size=[64,64,64]"]``.

    String values are parsed as JSON when they are JSON (numbers, lists, objects, true/false/null), else kept as
    strings; a mapping's values are used as given. The result is validated again.

    Raises:
        InvalidArgumentError: Not ``key=value``, an unknown field (the closest valid names are suggested), or an
            invalid value (the field and the rule are named).
    """
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    data = plan.model_dump()
    for key, value in items:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise InvalidArgumentError(f"plan override {key!r}: {part!r} is not a section of the plan")
            node = node[part]
        if parts[-1] not in node and not (len(parts) > 1 and parts[-2] in OPEN_SECTIONS):
            look_up_option(parts[-1], list(node), what="plan field")
        node[parts[-1]] = _parse_value(value) if isinstance(value, str) else value
    try:
        return type(plan).model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(f"plan override: {format_validation_error(exc)}") from exc


def check_plan_task(data: Any, model: type[BaseModel], path: str | Path) -> None:
    """Refuse the plan of another task by name, before its fields are checked against the wrong schema.

    Raises:
        InvalidArgumentError: ``data["task"]`` names another task than ``model``'s ``task`` field allows.
    """
    field = model.model_fields.get("task")
    expected = get_args(field.annotation) if field is not None else ()
    found = data.get("task") if isinstance(data, dict) else None
    if expected and isinstance(found, str) and found not in expected:
        raise InvalidArgumentError(
            f"this is a {found} model's plan, not a {expected[0]} one", path=path,
            fix=f"give a {expected[0]} model; deepmia predict runs a model of any task",
        )


def load_plan_file(model: type[P], path: str | Path) -> P:
    """Read and validate a plan file of type ``model``.

    Raises:
        InvalidArgumentError: Missing, not JSON, the plan of another task, or not a valid plan (each bad field
            named).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        check_plan_task(data, model, path)
        return model.model_validate(data)
    except FileNotFoundError:
        raise InvalidArgumentError("plan file not found", path=path, fix="is this a model directory?") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"not valid JSON: {exc}", path=path) from exc
    except ValidationError as exc:
        raise InvalidArgumentError(f"invalid plan: {format_validation_error(exc)}", path=path) from exc
