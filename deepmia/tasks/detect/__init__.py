"""Self-configuring object detection (2D images; 3D volumes through the same code) with MONAI's RetinaNet.

Training boxes -> plan (scale, input size, pyramid levels and anchor shapes by k-means of the box shapes) ->
train (box-aware augmentation, bf16, model selection on validation mAP@0.5) -> predict (sliding window, mirror
TTA fused by weighted box fusion, COCO results) -> evaluate (COCO mAP, AR, FROC, CPM, bootstrap intervals).
"""

from deepmia.tasks._base import TASKS, Task


def _predictor() -> type:
    from deepmia.tasks.detect.predict import Predictor

    return Predictor


def _plan(dataset, *, time_budget_s=None, overrides=(), progress=None) -> dict:
    from deepmia.tasks.detect.train import plan_dataset

    return plan_dataset(dataset, time_budget_s=time_budget_s, overrides=overrides).model_dump()


TASKS.register("detect")(Task(
    name="detect", plan_task="detection",
    predictor=_predictor, train_command="deepmia train detect", planner=_plan,
))
