"""Task packages: one per learning task, each with plan, model, train, predict and evaluate, registered by name.

``TASKS`` holds every task (its package registers it on import; importing a task package is light: torch loads
when a predictor is built). :func:`load_predictor` builds the predictor of any model directory.
"""

from deepmia.tasks import classify, detect, register, segment  # noqa: F401  (each registers itself on import)
from deepmia.tasks._base import (
    MEASUREMENT_COLUMNS,
    TASKS,
    Predictor,
    Result,
    Task,
    load_predictor,
    resolve_model,
    shipped_models,
    task_of_model,
)

__all__ = ["TASKS", "Task", "Predictor", "Result", "MEASUREMENT_COLUMNS", "load_predictor", "task_of_model",
           "resolve_model", "shipped_models"]
