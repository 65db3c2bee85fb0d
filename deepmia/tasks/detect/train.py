"""Train a detector from a detection dataset folder into a model directory.

``train(dataset_dir, out_dir, time_budget_s=3600)``: fingerprint of the training boxes -> plan -> measure the
step time (threads, bf16 against fp32) and fit the epochs to the budget -> train with
:class:`deepmia.engine.Trainer` (model selection on validation mAP@0.5, in 3D on the CPM) -> choose test-time
augmentation and the box-fusion threshold on the validation cases (:func:`choose_inference`) -> write the model
directory::

    MODEL_DIR/plan.json  split.json  metrics.json  fold_0/model_best.pt

(``deepmia train detect`` then writes the model card, ``README.md``, with deepmia.report.model_card.)

The dataset's first fold (the official train/val lists for VOC data) is used; the test cases are never read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.data.dataset import Dataset
from deepmia.engine.trainer import build_optimizer
from deepmia.errors import DatasetError
from deepmia.tasks.detect.data import Sample, batches, fingerprint, load_samples
from deepmia.tasks.detect.model import build_detector
from deepmia.tasks.detect.plan import DetectPlan, apply_overrides, load_plan, make_plan

__all__ = ["train", "plan_dataset", "fit_to_budget", "split_of", "validation_map", "monitor_of",
           "selection_score", "choose_inference", "INFERENCE_CHOICES", "CPM_MONITOR"]

Progress = Callable[[str], None]


def split_of(dataset: Dataset) -> tuple[dict[str, list[str]], list[str]]:
    """The first fold's train/val case ids and the test ids.

    Raises:
        DatasetError: The dataset has no split with a validation set.
    """
    splits = dataset.splits
    if splits is None or not splits.folds or not splits.folds[0].val:
        raise DatasetError("the dataset has no train/validation split", path=dataset.root,
                           fix="run `deepmia dataset split DATASET` first (validation selects the model)")
    fold = splits.folds[0]
    return {"train": list(fold.train), "val": list(fold.val)}, list(splits.test)


def plan_dataset(dataset: Dataset, *, time_budget_s: float | None = None,
                 overrides: Sequence[str] | dict[str, Any] = ()) -> DetectPlan:
    """Fingerprint the training cases' boxes and images and derive the plan (before the speed fit)."""
    fold, _ = split_of(dataset)
    plan = make_plan(fingerprint(dataset, fold["train"]), time_budget_s=time_budget_s)
    return apply_overrides(plan, overrides) if overrides else plan


def _loss(model: torch.nn.Module, batch: tuple[torch.Tensor, list[dict[str, torch.Tensor]]]) -> torch.Tensor:
    losses = model(batch[0], batch[1])
    return losses["classification"] + losses["box_regression"]


def fit_to_budget(plan: DetectPlan, samples: Sequence[Sample], n_val: int, *, progress: Progress | None = None
                  ) -> DetectPlan:
    """Fit threads, precision, epochs and the validation interval to ``time_budget_s`` from a measured step.

    A training step on a real batch is timed with one thread and with every core (or the user's
    ``schedule.threads`` alone), bf16 against fp32.
    Validation runs often enough to select a model but takes at most about a tenth of the budget. Without a
    budget only threads and precision are set; without a budget and with ``schedule.threads`` set, nothing is
    measured.
    """
    from deepmia.engine.runtime import autocast, choose_precision, configure_threads

    say = progress or (lambda _m: None)
    if plan.schedule.time_budget_s is None and plan.schedule.threads:  # the user fixed the runtime: nothing to fit
        torch.set_num_threads(plan.schedule.threads)
        return plan
    cores = configure_threads()
    model = build_detector(plan)
    opt = build_optimizer(model, lr=plan.schedule.lr, weight_decay=plan.schedule.weight_decay)
    batch = next(batches(samples, plan, seed=plan.seed))
    model.train()

    def step(precision: str) -> None:
        with autocast(precision):
            loss = _loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    runtime = {}
    for n in [plan.schedule.threads] if plan.schedule.threads else sorted({1, cores}):
        torch.set_num_threads(n)
        choice = choose_precision(step, repeats=1)
        seconds = choice[f"{choice['precision']}_s"]
        if seconds is None:  # no bf16 on this machine: time fp32 alone
            t = time.perf_counter()
            step("fp32")
            seconds = time.perf_counter() - t
        runtime[n] = {**choice, "seconds": seconds}
    threads = min(runtime, key=lambda n: runtime[n]["seconds"])
    torch.set_num_threads(threads)
    seconds = runtime[threads]["seconds"]
    precision = runtime[threads]["precision"]
    steps = max(1, len(samples) // min(plan.schedule.batch_size, len(samples)))
    epoch_s = seconds * steps * 1.1
    val_s = seconds / plan.schedule.batch_size * n_val * 0.6  # forward only, about a third of a training step
    say(f"runtime: {threads} thread(s), {precision}, {seconds:.2f} s/step, ~{epoch_s:.0f} s/epoch")
    update: dict[str, Any] = {"schedule.precision": precision, "schedule.threads": threads,
                              "measurements": {"runtime": {str(k): v for k, v in runtime.items()},
                                               "epoch_s": epoch_s, "validation_s": val_s}}
    budget = plan.schedule.time_budget_s
    if budget is not None:
        val_every = max(1, int(np.ceil(val_s / (0.1 * epoch_s))))
        epochs = int(budget / (epoch_s + val_s / val_every))
        update.update({"schedule.max_epochs": max(1, min(plan.schedule.max_epochs, epochs)),
                       "schedule.val_every": val_every})
    return apply_overrides(plan, update)


def validation_map(detector: torch.nn.Module, samples: Sequence[Sample], plan: DetectPlan) -> dict[str, float]:
    """mAP@0.5 and mAP@[.5:.95] of validation samples (no test-time augmentation), in image pixels.

    In 3D also the FROC's CPM (``val_cpm``, IoU >= 0.1) and the score that selects 3D models (:func:`monitor_of`).
    """
    from deepmia.tasks.detect.evaluate import score
    from deepmia.tasks.detect.predict import detect_arrays

    found = detect_arrays([detector], [s.image for s in samples], plan, tta=False)
    preds, refs = _to_image_space(found, samples, plan)
    result = score(preds, refs, plan.class_names, n_resamples=0)
    out = {"val_map50": result["coco"]["map50"], "val_map": result["coco"]["map"]}
    if plan.spatial_dims == 3:
        out["val_cpm"] = _cpm(result)
        out[CPM_MONITOR] = selection_score(result, plan)
    return out


#: The 3D selection score: the CPM, ties broken by mAP@0.5 (:func:`selection_score`).
CPM_MONITOR = "val_cpm_then_map50"


def monitor_of(plan: DetectPlan) -> str:
    """The validation metric that selects the model (and, through :func:`selection_score`, the inference settings).

    2D: mAP@0.5 (the COCO/VOC measure). 3D: the CPM of the FROC (the LUNA16 measure: sensitivity at 1/8 to 8
    false positives per volume with the loose IoU >= 0.1 hit), which mAP@0.5 tracks poorly for small 3D boxes;
    since the CPM reaches 1 on easy validation sets long before the boxes are good, ties go to mAP@0.5.
    """
    return CPM_MONITOR if plan.spatial_dims == 3 else "val_map50"


def _cpm(result: dict[str, Any]) -> float:
    """The CPM of a :func:`~deepmia.tasks.detect.evaluate.score` result (NaN without an FROC)."""
    return result["froc"]["cpm"] if result["froc"] else float("nan")


def selection_score(result: dict[str, Any], plan: DetectPlan) -> float:
    """The number :func:`monitor_of` maximises, from a :func:`~deepmia.tasks.detect.evaluate.score` result.

    2D: mAP@0.5 + mAP@[.5:.95]; 3D: CPM + mAP@0.5 / 1000 (a CPM step on a validation set is far above 1e-3).
    """
    coco = result["coco"]
    if plan.spatial_dims == 3:
        return _cpm(result) + coco["map50"] / 1000
    return coco["map50"] + coco["map"]


#: Test-time augmentation settings tried on validation: (tta, WBF IoU threshold).
INFERENCE_CHOICES = ((False, None), (True, 0.55), (True, 0.7), (True, 0.85))


def _to_image_space(found: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], samples: Sequence[Sample],
                    plan: DetectPlan) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    preds, refs = {}, {}
    for (boxes, scores, labels), s in zip(found, samples, strict=True):
        d = len(s.original_shape)
        b = boxes / plan.scale
        hi = np.asarray(s.original_shape, float)
        b = np.concatenate([np.clip(b[:, :d], 0, hi), np.clip(b[:, d:], 0, hi)], axis=1)
        preds[s.case_id] = {"boxes": b, "scores": scores, "labels": labels}
        refs[s.case_id] = {"boxes": s.boxes.astype(float) / plan.scale, "labels": s.labels}
    return preds, refs


def choose_inference(plan: DetectPlan, weights: Path, samples: Sequence[Sample], *, progress: Progress | None = None
                     ) -> tuple[DetectPlan, dict[str, Any]]:
    """Choose test-time augmentation and the WBF threshold on validation; return the plan and validation metrics.

    Every mirror pass of the best model is computed once; each of :data:`INFERENCE_CHOICES` fuses them and is
    scored by :func:`selection_score` (2D: mAP@0.5 + mAP@[.5:.95]; 3D: the CPM); the best is stored in
    ``plan.inference`` and its metrics (with bootstrap intervals, FROC and CPM) are returned.
    """
    from deepmia.tasks.detect.evaluate import score
    from deepmia.tasks.detect.predict import detect_passes, fuse

    say = progress or (lambda _m: None)
    det = build_detector(plan)
    det.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    passes = detect_passes([det], [s.image for s in samples], plan, tta=True)
    by_cpm = monitor_of(plan) == CPM_MONITOR
    table, best = [], None
    for tta, iou in INFERENCE_CHOICES:
        found = [fuse(p if tta else p[:1], iou_threshold=iou or 1.0, max_detections=plan.inference.max_detections)
                 for p in passes]
        preds, refs = _to_image_space(found, samples, plan)
        result = score(preds, refs, plan.class_names, n_resamples=0)
        coco = result["coco"]
        row = {"tta": tta, "wbf_iou": iou, "map50": coco["map50"], "map": coco["map"]}
        if by_cpm:
            row["cpm"] = _cpm(result)
        row["selection"] = selection_score(result, plan)
        table.append(row)
        if best is None or row["selection"] > best[0]["selection"]:
            best = (row, preds, refs)
    row, preds, refs = best
    say("validation: " + "; ".join(f"{'TTA WBF ' + str(r['wbf_iou']) if r['tta'] else 'no TTA'}: mAP@0.5 "
                                   f"{r['map50']:.4f}, mAP {r['map']:.4f}" + (f", CPM {r['cpm']:.4f}" if by_cpm else "")
                                   for r in table))
    update: dict[str, Any] = {"inference.tta": row["tta"], "measurements": {**plan.measurements,
                                                                             "inference_choice": table}}
    if row["tta"]:
        update["inference.wbf_iou"] = row["wbf_iou"]
    plan = apply_overrides(plan, update)
    val = score(preds, refs, plan.class_names)
    val.update(split="val", tta=row["tta"], wbf_iou=plan.inference.wbf_iou if row["tta"] else None)
    return plan, val


def train(
    dataset_dir: str | Path, out_dir: str | Path, *, time_budget_s: float | None = None,
    overrides: Sequence[str] | dict[str, Any] = (), progress: Progress | None = None,
) -> dict[str, Any]:
    """Plan, train and score a detector; write the model directory.

    Args:
        dataset_dir: A detection dataset folder with a train/validation split.
        out_dir: The model directory (a re-run resumes from its checkpoint and keeps its plan).
        time_budget_s: Wall-clock training budget.
        overrides: Plan overrides (``"schedule.lr=0.002"``).
        progress: Called with one-line status messages.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        DatasetError: Not a detection dataset, no validation split, no boxes, or a box outside its image.
    """
    from deepmia.engine.runtime import seed_everything
    from deepmia.engine.trainer import Trainer

    say = progress or (lambda _m: None)
    dataset = Dataset.load(dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold, test = split_of(dataset)
    plan_path = out / "plan.json"
    resuming = plan_path.exists()
    plan = load_plan(plan_path) if resuming else plan_dataset(dataset, time_budget_s=time_budget_s,
                                                               overrides=overrides)
    t = time.perf_counter()
    train_samples, ignored = load_samples(dataset, fold["train"], plan)
    val_samples, _ = load_samples(dataset, fold["val"], plan)
    say(f"loaded {len(train_samples)} training and {len(val_samples)} validation images in "
        f"{time.perf_counter() - t:.0f} s" + (f" ({ignored} ignore boxes left out of training)" if ignored else ""))
    if resuming:
        torch.set_num_threads(plan.schedule.threads or torch.get_num_threads())
    else:
        plan = fit_to_budget(plan, train_samples, len(val_samples), progress=say)
        plan_path.write_text(plan.model_dump_json(indent=1) + "\n")
    say(f"plan: scale {plan.scale}, input {plan.input_size}, anchors {plan.anchors.base_shapes} x "
        f"{plan.anchors.feature_map_scales}, up to {plan.schedule.max_epochs} epochs, validation every "
        f"{plan.schedule.val_every}")
    seed_everything(plan.seed)
    model = build_detector(plan)
    bs = min(plan.schedule.batch_size, len(train_samples))
    trainer = Trainer(
        model, build_optimizer(model, lr=plan.schedule.lr, weight_decay=plan.schedule.weight_decay), _loss,
        batches(train_samples, plan, seed=plan.seed),
        out_dir=out / "fold_0", steps_per_epoch=max(1, len(train_samples) // bs),
        max_epochs=plan.schedule.max_epochs, time_budget_s=plan.schedule.time_budget_s,
        validate=lambda m: validation_map(m, val_samples, plan), val_every=plan.schedule.val_every,
        monitor=monitor_of(plan), mode="max", warmup=plan.schedule.warmup, precision=plan.schedule.precision,
    )
    state = trainer.fit()
    say(f"{state.epoch} epochs in {state.elapsed_s:.0f} s, best validation {monitor_of(plan)} {state.best_metric:.4f} "
        f"(epoch {state.best_epoch})")
    (out / "split.json").write_text(json.dumps({**fold, "test": test}, indent=1) + "\n")
    plan, val = choose_inference(plan, out / "fold_0" / "model_best.pt", val_samples, progress=say)
    plan_path.write_text(plan.model_dump_json(indent=1) + "\n")
    metrics = {"validation": val, "training": {"epochs": state.epoch, "best_epoch": state.best_epoch,
                                               f"best_{monitor_of(plan)}_no_tta": state.best_metric,
                                               "seconds": round(state.elapsed_s, 1), "stopped": state.stopped}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return metrics
