"""Compress a segmentation model: a DynUNet with every stage's filters scaled, distilled and/or pruned from the teacher.

Pruning (``--prune R``): the teacher's weights with the fraction ``R`` of every convolution's output channels removed
by filter L1 norm (:func:`deepmia.engine.prune.dynunet_groups`), fine-tuned at the plan's learning rate (pruning half
of a U-Net's channels loses whole classes until it is retrained: measured on hippocampus, posterior Dice 0 after 153
steps at a quarter of it).

The student's loss on each augmented patch batch is ``(1 - alpha) * DiceCE(labels)`` (the plan's loss, deep
supervision included) ``+ alpha * (T^2 * CE(softmax(z_t / T), softmax(z_s / T)) + soft Dice(softmax(z_s),
softmax(z_t)))`` on the full-resolution output, the teacher (the first trained fold, no deep supervision) run on the
same patches. Patches come from the teacher's training cases of that fold, preprocessed with the teacher's plan
(the same cache ``deepmia train segment`` uses). After the budget the student's last weights are validated on the
fold's validation cases as training does (mirroring, keep-largest-component chosen on them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.errors import InvalidArgumentError
from deepmia.tasks.compress.common import (
    CompressOptions,
    check_cases,
    finish_directory,
    parameter_count,
    scaled_widths,
    teacher_split,
)

__all__ = ["compress_segmenter", "distillation_loss", "prune_segmenter"]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft cross-entropy at ``temperature`` (times ``T^2``) plus soft Dice of the softmaxes, per batch.

    Args:
        student: Student logits ``(B, C, *spatial)``.
        teacher: Teacher logits of the same shape.
        temperature: Softmax temperature of the cross-entropy term.
    """
    t = temperature
    soft = torch.softmax(teacher / t, 1)
    ce = -(soft * torch.log_softmax(student / t, 1)).sum(1).mean() * t * t
    p, q = torch.softmax(student, 1), torch.softmax(teacher, 1)
    dims = (0, *range(2, p.dim()))
    dice = (2 * (p * q).sum(dims) + 1e-5) / (p.sum(dims) + q.sum(dims) + 1e-5)
    return ce + (1 - dice[1:].mean())


def _student_plan(plan: Any, options: CompressOptions, model_dir: Path) -> Any:
    from deepmia.engine.prune import PRUNABLE_SEGMENTATION
    from deepmia.tasks.segment.plan import apply_overrides

    if plan.network != "dynunet":
        raise InvalidArgumentError(f"compression of segmentation network {plan.network!r} is not supported; "
                                   f"supported: {PRUNABLE_SEGMENTATION}", path=model_dir / "plan.json")
    filters = scaled_widths(list(plan.network_params["filters"]), options)
    return apply_overrides(plan, {"network_params.filters": filters, "schedule.time_budget_s": options.time_budget_s})


def prune_segmenter(model: torch.nn.Module, plan: Any, ratio: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``model``'s weights with ``ratio`` of every convolution's channels removed, in a DynUNet of ``plan``.

    ``plan`` is the student's (filters already scaled); channels go by filter L1 norm, deep supervision heads
    included.

    Returns:
        The pruned network and, per channel group, the kept channel indices.
    """
    from deepmia.engine.prune import dynunet_groups, prune_state_dict
    from deepmia.tasks.segment.model import build_model

    state = model.state_dict()
    new_state, kept = prune_state_dict(state, dynunet_groups(state), ratio)
    small = build_model(plan)
    small.load_state_dict(new_state)
    return small, kept


def compress_segmenter(model_dir: Path, out: Path, dataset_dir: Path, options: CompressOptions, *,
                       cache: Path | None = None, workers: int = 2, say: Any = print) -> dict[str, Any]:
    """Distil a segmentation model directory into ``out`` (a complete model directory of one fold).

    Returns:
        The compression record (also in ``out/compression.json``).

    Raises:
        InvalidArgumentError: Not a DynUNet, or pruning asked for.
        DatasetError: The dataset lacks the teacher's cases.
    """
    from deepmia.data.dataset import Dataset
    from deepmia.engine.runtime import machine, seed_everything
    from deepmia.engine.trainer import Trainer, build_optimizer
    from deepmia.nn import build_loss
    from deepmia.tasks._model import load_fold_models
    from deepmia.tasks.segment.data import PatchSampler, augment_batch, background_batches
    from deepmia.tasks.segment.evaluate import validate_fold
    from deepmia.tasks.segment.model import build_model
    from deepmia.tasks.segment.plan import load_plan
    from deepmia.tasks.segment.preprocess import preprocess_dataset
    from deepmia.tasks.segment.train import default_cache

    t0 = time.perf_counter()
    teacher_plan = load_plan(model_dir / "plan.json")
    plan = _student_plan(teacher_plan, options, model_dir)
    split = teacher_split(model_dir)
    fold = int(split.get("fold", 0))
    dataset = Dataset.load(dataset_dir)
    check_cases(dataset, list(split["train"]) + list(split["val"]), model_dir)
    teacher = load_fold_models(model_dir, [fold], lambda: build_model(teacher_plan))[0]  # eval: one output
    for p in teacher.parameters():
        p.requires_grad_(False)
    cache_dir = preprocess_dataset(dataset, teacher_plan, cache or default_cache(), list(split["train"]),
                                   workers=workers)  # the teacher's preprocessing: the student's is the same
    seed_everything(options.seed + fold)
    model, loss_fn = build_model(plan), build_loss(plan.loss, **plan.loss_params)
    kept = None
    if options.prune is not None:
        model, kept = prune_segmenter(teacher, plan, options.prune)
    sampler = PatchSampler(cache_dir, list(split["train"]), plan, seed=options.seed + fold)
    rng = np.random.default_rng(options.seed + 1000 + fold)
    alpha, t = options.alpha, options.temperature

    def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = sampler.batch()
        return augment_batch(images, labels, rng=rng, preset=plan.augmentation, mirror_axes=plan.inference.mirror_axes)

    def step(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        out_s = net(images)
        loss = loss_fn(out_s, labels)
        if alpha == 0.0:
            return loss
        with torch.no_grad():
            z_t = teacher(images).float()
        main = (out_s[:, 0] if out_s.dim() == z_t.dim() + 1 else out_s).float()
        return (1 - alpha) * loss + alpha * distillation_loss(main, z_t, t)

    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.json")
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    s = plan.schedule
    reserve = 0.1 * options.time_budget_s  # validation on the fold's cases after training
    trainer = Trainer(model, build_optimizer(model, name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay,
                                             momentum=s.momentum),
                      step, background_batches(make_batch), out_dir=out / f"fold_{fold}",
                      steps_per_epoch=min(s.steps_per_epoch, 50), max_epochs=100000,
                      time_budget_s=max(1.0, options.time_budget_s - reserve - (time.perf_counter() - t0)),
                      lr_schedule="poly", warmup=s.warmup, precision=s.precision, grad_clip=s.grad_clip)
    state = trainer.fit()
    say(f"student: {state.epoch} epochs, {state.step} steps in {state.elapsed_s / 60:.1f} min")
    summary = validate_fold(dataset, out, fold, list(split["val"]))
    training = {"epochs": state.epoch, "steps": state.step, "minutes": round(state.elapsed_s / 60, 2),
                "stopped": state.stopped, "best_epoch": state.best_epoch, "precision": s.precision,
                "threads": torch.get_num_threads(), "machine": machine(), "torch": torch.__version__}
    summary["training"] = training
    (out / f"fold_{fold}" / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    teacher_metrics = model_dir / f"fold_{fold}" / "metrics.json"
    record = {"task": "segment", "fold": fold, "teacher_parameters": parameter_count(teacher),
              "student_parameters": parameter_count(model),
              "teacher_filters": teacher_plan.network_params["filters"],
              "student_filters": plan.network_params["filters"],
              "training": training, "validation_dice": _mean_dice(summary),
              "pruned_channels": None if kept is None else {g: len(k) for g, k in kept.items()},
              "teacher_validation_dice": _mean_dice(json.loads(teacher_metrics.read_text()))
              if teacher_metrics.exists() else None}
    return finish_directory(model_dir, out, options, record)


def _mean_dice(summary: dict[str, Any]) -> float | None:
    """The mean Dice over classes of a fold's ``metrics.json`` summary."""
    mean = summary.get("mean", {}) if isinstance(summary.get("mean"), dict) else {}
    dice = mean.get("dice")
    if isinstance(dice, dict):
        dice = dice.get("mean", dice.get("estimate"))
    return float(dice) if isinstance(dice, (int, float)) else None
