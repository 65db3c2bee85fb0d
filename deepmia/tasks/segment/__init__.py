"""Self-configuring segmentation: fingerprint -> plan -> preprocess -> train -> predict -> evaluate."""

from deepmia.tasks._base import TASKS, Task


def _predictor() -> type:
    from deepmia.tasks.segment.predict import Predictor

    return Predictor


def _plan(dataset, *, time_budget_s=None, overrides=(), progress=None) -> dict:
    from deepmia.tasks.segment.train import plan_dataset

    report = (lambda d, t: progress("fingerprint", d, t)) if progress else None
    return plan_dataset(dataset, time_budget_s=time_budget_s, overrides=overrides,
                        progress=(lambda _s, d, t: report(d, t)) if report else None).model_dump()


TASKS.register("segment")(Task(
    name="segment", plan_task="segmentation",
    predictor=_predictor, train_command="deepmia train segment", planner=_plan,
))
