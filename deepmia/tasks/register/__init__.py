"""Image registration: transforms, classical and learned registration, evaluation, the ``deepmia register`` command.

Transforms are objects (apply, compose, invert, save); classical registration runs on SimpleITK and learned
registration on a VoxelMorph-style network; evaluation covers label overlap, landmark error, the Jacobian and
inverse consistency.
"""

from deepmia.tasks._base import TASKS, Task


def _predictor() -> type:
    from deepmia.tasks.register.predict import Predictor

    return Predictor


def _plan(dataset, *, time_budget_s=None, overrides=(), progress=None) -> dict:
    from deepmia.tasks.register.train import plan_registration

    return plan_registration(dataset, time_budget_s=time_budget_s or 600.0, overrides=overrides).model_dump()


TASKS.register("register")(Task(
    name="register", plan_task="registration",
    predictor=_predictor, train_command="deepmia train register", planner=_plan,
    trains_on="segmentation",
))
