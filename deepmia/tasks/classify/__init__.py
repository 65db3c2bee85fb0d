"""Self-configuring image classification (2D and 3D; binary, multi-class, multi-label).

Optionally fused with clinical features. Fingerprint -> plan -> train (ensemble, model selection on validation
AUROC) -> temperature scaling and operating threshold on validation -> predict (TTA, MC dropout, uncertainty
flag) -> evaluate -> explain. See ``docs/classification.md``.
"""

from deepmia.tasks._base import TASKS, Task


def _predictor() -> type:
    from deepmia.tasks.classify.predict import Predictor

    return Predictor


def _plan(dataset, *, time_budget_s=None, overrides=(), progress=None) -> dict:
    from deepmia.tasks.classify.train import plan_dataset

    return plan_dataset(dataset, time_budget_s=time_budget_s, overrides=overrides).model_dump()


TASKS.register("classify")(Task(
    name="classify", plan_task="classification",
    predictor=_predictor, train_command="deepmia train classify", planner=_plan,
))
