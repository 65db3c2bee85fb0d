"""Compress a classification model: a narrower ResNet, distilled from the teacher and/or pruned from it.

Distillation (Hinton et al., 2015): the student's loss is ``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
+ (1 - alpha) * CE(z_s, y)``, the teacher's logits ``z_t`` (the mean of its members) computed on the same augmented
batch. Pruning: the teacher's first member with the fraction ``R`` of every channel group removed by filter L1
norm (:mod:`deepmia.engine.prune`), fine-tuned with the labels' loss (and the distillation term with
``--distill``) at a quarter of the plan's learning rate. The student trains on the teacher's training split,
selected on validation AUROC, then is calibrated on the validation split as ``deepmia train classify`` does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.errors import InvalidArgumentError
from deepmia.tasks.compress.common import (
    CompressOptions,
    check_cases,
    finish_directory,
    parameter_count,
    scaled_widths,
    teacher_split,
)

__all__ = ["compress_classifier", "prune_classifier"]


def _check_network(plan: Any, model_dir: Path, options: CompressOptions) -> None:
    from deepmia.engine.prune import PRUNABLE, PRUNABLE_SEGMENTATION

    if plan.network != "resnet" or plan.tabular is not None:
        what = "a fusion (image + clinical) network" if plan.tabular is not None else f"network {plan.network!r}"
        raise InvalidArgumentError(
            f"compression of {what} is not supported; supported: {PRUNABLE} and {PRUNABLE_SEGMENTATION}",
            path=model_dir / "plan.json")
    if options.prune is not None and int(plan.network_params.get("depth", 18)) >= 50:
        raise InvalidArgumentError(f"structured pruning supports only {PRUNABLE}, not depth "
                                   f"{plan.network_params['depth']}", path=model_dir / "plan.json",
                                   fix="use --distill alone")


def prune_classifier(model: torch.nn.Module, plan: Any, ratio: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A new network of the plan's family with ``ratio`` of every channel group removed, weights sliced.

    Returns:
        The pruned network (eval mode) and ``{"widths": [...], "kept": {group: indices}}``.
    """
    from deepmia.engine.prune import prune_state_dict, resnet_groups
    from deepmia.tasks.classify.model import build_model

    state = model.state_dict()
    new_state, kept = prune_state_dict(state, resnet_groups(state), ratio)
    widths = scaled_widths(list(plan.network_params["widths"]), CompressOptions(prune=ratio))
    small = build_model(plan, network_params={"widths": widths})
    small.load_state_dict(new_state)
    return small.eval(), {"widths": widths, "kept": kept}


def _student_plan(plan: Any, options: CompressOptions) -> Any:
    from deepmia.tasks.classify.plan import apply_overrides

    widths = scaled_widths(list(plan.network_params["widths"]), options)
    lr = plan.schedule.lr * (0.25 if options.prune is not None else 1.0)
    return apply_overrides(plan, {"network_params.widths": widths, "members": 1, "schedule.lr": lr,
                                  "schedule.time_budget_s": options.time_budget_s,
                                  "measurements": {"compressed_from_widths": plan.network_params["widths"]}})


def _loss(plan: Any, teachers: list[torch.nn.Module], options: CompressOptions):
    weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
    t, alpha = options.temperature, options.alpha if options.distill else 0.0

    def step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch[0], batch[1]
        zs = model(x).float()
        ce = F.cross_entropy(zs, y, weight=weight)
        if alpha == 0.0:
            return ce
        with torch.no_grad():
            zt = torch.stack([m(x).float() for m in teachers]).mean(0)
        kd = F.kl_div(F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1), reduction="batchmean", log_target=True)
        return alpha * t * t * kd + (1 - alpha) * ce

    return step


def compress_classifier(model_dir: Path, out: Path, dataset_dir: Path, options: CompressOptions, *,
                        say: Any = print) -> dict[str, Any]:
    """Distil and/or prune a classification model directory into ``out`` (a complete model directory).

    Returns:
        The compression record (also in ``out/compression.json``).

    Raises:
        InvalidArgumentError: Not a basic-block ResNet without clinical features, or a bad option.
        DatasetError: The dataset lacks the teacher's cases.
    """
    from deepmia.data.dataset import Dataset
    from deepmia.engine.runtime import seed_everything
    from deepmia.engine.trainer import Trainer, build_optimizer
    from deepmia.tasks.classify.data import batches, labels_of, load_cases
    from deepmia.tasks.classify.predict import Predictor
    from deepmia.tasks.classify.train import calibrate, logits_of, save_uncalibrated

    t0 = time.perf_counter()
    from deepmia.tasks.classify.plan import load_plan

    _check_network(load_plan(model_dir / "plan.json"), model_dir, options)
    teacher = Predictor(model_dir, calibrated=False, tta=False)
    split = teacher_split(model_dir)
    dataset = Dataset.load(dataset_dir)
    ids = list(split["train"]) + list(split["val"])
    check_cases(dataset, ids, model_dir)
    plan = _student_plan(teacher.plan, options)
    if plan.schedule.threads:
        torch.set_num_threads(plan.schedule.threads)
    images, labels = load_cases(dataset, ids, plan), labels_of(dataset, ids, plan)
    n = len(split["train"])
    say(f"loaded {len(ids)} cases in {time.perf_counter() - t0:.0f} s; student widths {plan.network_params['widths']}")
    seed_everything(options.seed)
    if options.prune is not None:
        model, pruned = prune_classifier(teacher.models[0], teacher.plan, options.prune)
    else:
        from deepmia.tasks.classify.model import build_model

        model, pruned = build_model(plan), None
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(plan.model_dump_json(indent=1) + "\n")
    xv, yv = images[n:], labels[n:]

    def validate(net: torch.nn.Module) -> dict[str, float]:
        from deepmia.engine.calibration import probabilities
        from deepmia.metrics.classification import auroc_report

        prob = probabilities(logits_of(net, xv, None), multi_label=plan.multi_label)
        return {"val_auroc": float(auroc_report(yv, prob, n_resamples=0)["macro"]["auc"])}

    bs = min(plan.schedule.batch_size, n)
    left = max(1.0, options.time_budget_s - (time.perf_counter() - t0))
    trainer = Trainer(model, build_optimizer(model, name=plan.schedule.optimizer, lr=plan.schedule.lr,
                                             weight_decay=plan.schedule.weight_decay),
                      _loss(plan, teacher.models, options), batches(images[:n], labels[:n], plan, seed=options.seed),
                      out_dir=out / "fold_0", steps_per_epoch=max(1, n // bs), max_epochs=plan.schedule.max_epochs,
                      time_budget_s=left, validate=validate, monitor="val_auroc", mode="max",
                      precision=plan.schedule.precision)
    state = trainer.fit()
    say(f"student: {state.epoch} epochs in {state.elapsed_s:.0f} s, best val AUROC {state.best_metric:.4f}")
    (out / "split.json").write_text(json.dumps({"train": split["train"], "val": split["val"],
                                                "test": split.get("test", []),
                                                "members": [{"fold": 0, "seed": options.seed}]}, indent=1) + "\n")
    save_uncalibrated(out, plan)
    history = {"member": 0, "fold": 0, "seed": options.seed, "epochs": state.epoch, "best_epoch": state.best_epoch,
               "best_val_auroc": state.best_metric, "seconds": round(state.elapsed_s, 1), "stopped": state.stopped}
    index = {c: i for i, c in enumerate(ids)}
    metrics = calibrate(out, dataset, [{"train": list(split["train"]), "val": list(split["val"])}], images=images,
                        labels=labels, tab=None, index=index, histories=[history])
    record = {"task": "classify", "teacher_parameters": parameter_count(teacher.models[0]),
              "student_parameters": parameter_count(model),
              "teacher_widths": teacher.plan.network_params["widths"], "student_widths": plan.network_params["widths"],
              "training": history, "validation_auroc": _auroc(metrics),
              "teacher_validation_auroc": _auroc(_read(model_dir / "metrics.json")),
              "pruned_channels": None if pruned is None else {g: len(k) for g, k in pruned["kept"].items()}}
    return finish_directory(model_dir, out, options, record)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _auroc(metrics: dict[str, Any]) -> float | None:
    """The validation AUROC of a classifier's ``metrics.json`` (binary: the positive class; else macro)."""
    val = metrics.get("validation", {})
    for key in ("auroc", "auc"):
        if isinstance(val.get(key), dict):
            v = val[key].get("macro", val[key])
            if isinstance(v, dict):
                v = v.get("auc")
            if isinstance(v, (int, float, np.floating)):
                return float(v)
    return None
