"""Train one fold of a segmentation model: plan, preprocess, train with the engine, choose post-processing, evaluate."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.data.dataset import Dataset
from deepmia.engine.parallel import broadcast_object, is_main, launch, rank, world_size
from deepmia.engine.runtime import choose_precision, configure_threads, machine, seed_everything
from deepmia.engine.trainer import Callback, Trainer, build_optimizer
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.metrics.segmentation import dice_per_label
from deepmia.nn import build_loss
from deepmia.tasks.segment.data import PatchSampler, augment_batch, background_batches
from deepmia.tasks.segment.model import build_model
from deepmia.tasks.segment.plan import SegmentPlan, apply_overrides, load_plan, make_plan
from deepmia.tasks.segment.preprocess import load_case, preprocess_dataset

__all__ = ["default_cache", "plan_dataset", "fold_split", "train_fold", "plan_epochs"]

Progress = Callable[[str, int, int], None]


def default_cache() -> Path:
    """Default preprocessing cache: ``$XDG_CACHE_HOME/deepmia/preprocessed`` (``~/.cache/...``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "deepmia" / "preprocessed"


def plan_dataset(
    dataset: Dataset,
    *,
    time_budget_s: float | None = None,
    overrides: Sequence[str] = (),
    folds: int = 5,
    progress: Progress | None = None,
) -> SegmentPlan:
    """Fingerprint a segmentation dataset (its held-out test cases left out) and derive its plan for this machine."""
    from deepmia.data.stats import fingerprint

    test = dataset.splits.test if dataset.splits is not None else []
    report = (lambda d, t: progress("fingerprint", d, t)) if progress else None
    fp = fingerprint(dataset.without_cases(test), progress=report)
    plan = make_plan(dataset, fp, machine=machine(), time_budget_s=time_budget_s, folds=folds)
    return apply_overrides(plan, list(overrides)) if overrides else plan


def fold_split(dataset: Dataset, plan: SegmentPlan, fold: int) -> dict[str, list[str]]:
    """Train/val case ids of ``fold``: the dataset's own splits if it has them, else patient-grouped k-fold."""
    from deepmia.data.splits import make_splits

    splits = dataset.splits
    if splits is None or not splits.folds:
        splits = make_splits(dataset, folds=plan.folds, test_fraction=0.0, seed=plan.seed)
    if not 0 <= fold < len(splits.folds):
        raise InvalidArgumentError(f"fold {fold} is outside 0..{len(splits.folds) - 1}")
    f = splits.folds[fold]
    return {"fold": fold, "train": list(f.train), "val": list(f.val), "test": list(splits.test)}


def _validator(cache: Path, val_ids: Sequence[str], plan: SegmentPlan) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Dice per class on the validation cases, predicted whole on the network grid (no mirroring: fast)."""
    from deepmia.engine.inference import sliding_window

    cases = [load_case(cache, c) for c in val_ids]

    def validate(model: torch.nn.Module) -> dict[str, float]:
        scores = []
        for image, label, _ in cases:
            pred = sliding_window(
                lambda x: torch.softmax(model(x).float(), 1),
                np.asarray(image),
                window=plan.patch_size,
                num_classes=plan.num_classes,
                overlap=0.25,
                batch_size=plan.inference.batch_size,
                precision=plan.schedule.precision,
            )
            scores.append(list(dice_per_label(pred, np.asarray(label)[0], range(1, plan.num_classes)).values()))
        per_class = np.nanmean(np.asarray(scores, dtype=float), axis=0)
        row = {
            f"val_dice_{plan.labels[str(k)]}": float(v)
            for k, v in zip(range(1, plan.num_classes), per_class, strict=True)
        }
        row["val_dice"] = float(np.nanmean(per_class))
        return row

    return validate


def _measure_precision(model: torch.nn.Module, loss_fn: torch.nn.Module, sampler: PatchSampler) -> dict[str, Any]:
    images, labels = sampler.batch()

    def step(precision: str) -> None:
        from deepmia.engine.runtime import autocast

        with autocast(precision):
            loss = loss_fn(model(images), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return choose_precision(step, repeats=2)


def _step_seconds(model: torch.nn.Module, loss_of_batch: Callable[[], torch.Tensor], precision: str) -> float:
    """Seconds of one training step (a batch drawn and augmented, forward and backward); weights unchanged.

    Best of two after two warm-ups.
    """
    from deepmia.engine.runtime import autocast

    best = float("inf")
    for i in range(4):
        t = time.perf_counter()
        with autocast(precision):
            loss = loss_of_batch()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i >= 2:
            best = min(best, time.perf_counter() - t)
    return best


def plan_epochs(train_s: float, step_s: float, val_s: float, *, max_steps: int = 250, validations: int = 20,
                val_share: float = 0.2, min_steps: int = 10) -> tuple[int, int]:
    """Epoch length and validation interval that fit ``train_s`` seconds of training.

    Up to ``validations`` validations (each ``val_s`` seconds) taking at most ``val_share`` of the time, the rest
    steps of ``step_s`` seconds, split into epochs of at most ``max_steps`` (nnU-Net's 250) and at least
    ``min_steps`` steps; one epoch per validation (``val_every`` 1) unless epochs must be shorter than the
    validations are frequent. Validation slower than the budget still leaves half of it to training.

    Returns:
        ``(steps_per_epoch, val_every)``.
    """
    n_val = int(min(validations, max(1.0, val_share * train_s / max(val_s, 1e-6))))
    steps = max(1.0, max(train_s - n_val * val_s, train_s / 2) / max(step_s, 1e-6))  # half at least, to train
    n_val = int(max(1, min(n_val, steps // min_steps)))
    per_epoch = int(min(max_steps, max(1, steps // n_val)))
    epochs = max(1, int(steps // per_epoch))
    return per_epoch, max(1, epochs // n_val)


def _fit_epochs(
    plan: SegmentPlan, model: torch.nn.Module, loss_of_batch: Callable[[], torch.Tensor],
    validate: Callable[[torch.nn.Module], dict[str, float]], *, started: float, user_set: set[str],
    log: Callable[[str], None],
) -> tuple[SegmentPlan, float]:
    """The plan with its epoch length and validation interval fitted to the budget, and the training seconds left.

    One validation pass and a few steps are timed; the validation after training (mirrored, in the original
    geometry) is kept out of the training time, and so is everything since ``started``.
    """
    step_s = _step_seconds(model, loss_of_batch, plan.schedule.precision)  # first: it warms the kernels up
    t = time.perf_counter()
    model.eval()  # as the Trainer validates: one output, no gradients
    with torch.no_grad():
        validate(model)
    model.train()
    val_s = time.perf_counter() - t
    reserve = 5.0 + 1.5 * val_s * (1 + len(plan.inference.mirror_axes))  # the mirrored final validation
    left = max(1.0, float(plan.schedule.time_budget_s or 0.0) - (time.perf_counter() - started) - reserve)
    steps, every = plan_epochs(left, step_s, val_s)
    fitted = {"schedule.steps_per_epoch": steps, "schedule.val_every": every}
    fitted = {k: v for k, v in fitted.items() if k not in user_set}  # the user's own values are kept
    if fitted:
        plan = apply_overrides(plan, fitted)
        s = plan.schedule
        log(f"epochs: {s.steps_per_epoch} steps of {step_s:.2f} s, validation ({val_s:.1f} s) every {s.val_every} "
            f"epoch(s), {left / 60:.1f} min of training left in the budget")
    return plan, left


def _resolve_plan(
    dataset: Dataset, plan: SegmentPlan | str | os.PathLike[str] | None, plan_path: Path, *,
    time_budget_s: float | None, overrides: Sequence[str], progress: Progress | None,
) -> SegmentPlan:
    """The given plan, the model directory's (resuming, or a further fold), or a new one; overrides applied.

    Raises:
        DatasetError: The plan is for another dataset.
    """
    if isinstance(plan, SegmentPlan):
        resolved = plan
    elif plan is not None:
        resolved = load_plan(plan)
    elif plan_path.exists():
        resolved = load_plan(plan_path)  # resuming, or a further fold of the same model
    else:
        resolved = plan_dataset(dataset, time_budget_s=time_budget_s, progress=progress)
    if overrides:
        resolved = apply_overrides(resolved, list(overrides))
    if time_budget_s is not None and resolved.schedule.time_budget_s != time_budget_s:
        resolved = apply_overrides(resolved, {"schedule.time_budget_s": time_budget_s})
    if resolved.dataset != dataset.spec.name:
        raise DatasetError(f"the plan is for dataset {resolved.dataset!r}, not {dataset.spec.name!r}", path=plan_path)
    return resolved


def train_fold(
    dataset_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fold: int = 0,
    plan: SegmentPlan | str | os.PathLike[str] | None = None,
    time_budget_s: float | None = None,
    overrides: Sequence[str] = (),
    cache: str | os.PathLike[str] | None = None,
    workers: int = 2,
    processes: int = 1,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train fold ``fold`` into ``out_dir/fold_<k>``; re-running resumes from the last checkpoint.

    With ``processes`` > 1, processes train together (DDP; plan and preprocessing made once, here), each drawing
    its own patches for a share of the plan's batch: global batch, steps and schedule are one process's.

    The model directory gets ``plan.json`` (the resolved plan), ``split.json`` and, per fold, the weights
    (``model_best.pt``), the last checkpoint, ``log.csv``, TensorBoard events and ``training_curve.png``.
    After training, the validation cases are predicted in their original geometry (with mirroring), scored,
    and keep-largest-component is chosen per class when it does not lower validation Dice.

    The time budget covers the whole call: planning, preprocessing and the validation after training are taken
    from it. With a budget, the epoch length and validation interval come from the measured step and validation
    times (:func:`plan_epochs`), each unless ``overrides`` set it (``schedule.steps_per_epoch``,
    ``schedule.val_every``).

    Returns:
        The fold's validation metrics summary.
    """
    t_start = time.perf_counter()
    dataset = Dataset.load(dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    resolved = _resolve_plan(dataset, plan, plan_path, time_budget_s=time_budget_s, overrides=overrides,
                             progress=progress)
    split = fold_split(dataset, resolved, fold)
    cache_root = Path(cache) if cache else default_cache()
    cache_dir = preprocess_dataset(dataset, resolved, cache_root, split["train"] + split["val"], workers=workers,
                                   progress=(lambda d, t: progress("preprocess", d, t)) if progress else None)
    fold_dir = out / f"fold_{fold}"
    if processes > 1 and world_size() == 1:
        if not (fold_dir / "checkpoint_last.pt").exists():
            resolved.save(plan_path)  # every process starts from this one plan
        return launch(train_fold, processes, dataset_dir, out_dir, fold=fold, plan=plan_path,
                      time_budget_s=time_budget_s, overrides=list(overrides), cache=cache, workers=workers)
    world, main, log = world_size(), is_main(), (log if is_main() else _silent)
    fold_dir.mkdir(exist_ok=True)
    seed_everything(resolved.seed + fold, deterministic=resolved.deterministic)
    threads = configure_threads(None if world == 1 else torch.get_num_threads())

    model, loss_fn = build_model(resolved), build_loss(resolved.loss, **resolved.loss_params)
    share = resolved if world == 1 else apply_overrides(resolved, {"batch_size": max(1, resolved.batch_size // world)})
    sampler = PatchSampler(cache_dir, split["train"], share, seed=resolved.seed + fold + 7919 * rank())
    checkpoint_exists = (fold_dir / "checkpoint_last.pt").exists()
    if not checkpoint_exists and resolved.schedule.precision == "auto":
        resolved = _chosen_precision(resolved, model, loss_fn, sampler, log)
    rng = np.random.default_rng(resolved.seed + 1000 + fold + 7919 * rank())

    def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = sampler.batch()
        return augment_batch(images, labels, rng=rng, preset=resolved.augmentation,
                             mirror_axes=resolved.inference.mirror_axes)

    def train_step(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, labels = batch
        return loss_fn(net(images), labels)

    validate = _validator(cache_dir, split["val"], resolved)
    train_budget = resolved.schedule.time_budget_s
    if train_budget is not None and not checkpoint_exists:
        if main:
            resolved, train_budget = _fit_epochs(
                resolved, model, lambda: train_step(model, make_batch()), validate, started=t_start, log=log,
                user_set={o.split("=", 1)[0].strip() for o in overrides})
        resolved, train_budget = broadcast_object((resolved, train_budget))
    if main:
        resolved.save(plan_path)
        _write_split(out / "split.json", split)
    s = resolved.schedule
    trainer = Trainer(
        model, build_optimizer(model, name=resolved.schedule.optimizer, lr=resolved.schedule.lr,
                               weight_decay=resolved.schedule.weight_decay, momentum=resolved.schedule.momentum),
        train_step, background_batches(make_batch), out_dir=fold_dir,
        steps_per_epoch=s.steps_per_epoch, max_epochs=s.epochs, time_budget_s=train_budget, validate=validate,
        val_every=s.val_every, monitor="val_dice", lr_schedule="poly", warmup=s.warmup, precision=s.precision,
        grad_clip=s.grad_clip, callbacks=[_EpochLog(log)],
    )
    t0 = time.perf_counter()
    state = trainer.fit()
    if not main:
        return {}
    log(f"training stopped ({state.stopped}) after {state.epoch} epochs, {state.step} steps, "
        f"{state.elapsed_s / 60:.1f} min; best val_dice {state.best_metric} at epoch {state.best_epoch}")
    record = _training_record(state, threads, resolved.schedule.precision, started=t0)
    record.update(processes=world, batch_per_process=share.batch_size)
    return _validated(dataset, out, fold, split["val"], record, progress=progress)


def _chosen_precision(plan: SegmentPlan, model: torch.nn.Module, loss_fn: torch.nn.Module, sampler: PatchSampler,
                      log: Callable[[str], None]) -> SegmentPlan:
    """The plan with the faster precision of this machine (measured by rank 0; every process gets its choice)."""
    if is_main():
        choice = _measure_precision(model, loss_fn, sampler)
        log(f"precision: bf16 step {choice['bf16_s']}, fp32 step {choice['fp32_s']} -> {choice['precision']}")
        plan = apply_overrides(plan, {"schedule.precision": choice["precision"]})
    return broadcast_object(plan)


def _validated(dataset: Dataset, out: Path, fold: int, val_ids: Sequence[str], training: dict[str, Any], *,
               progress: Progress | None) -> dict[str, Any]:
    """Predict and score the fold's validation cases; writes and returns ``fold_<k>/metrics.json``'s summary."""
    from deepmia.tasks.segment.evaluate import validate_fold

    summary = validate_fold(dataset, out, fold, val_ids, progress=progress)
    summary["training"] = training
    (out / f"fold_{fold}" / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _silent(message: str) -> None:
    """The log of the processes other than rank 0 (one process speaks)."""


def _training_record(state: Any, threads: int, precision: str, *, started: float) -> dict[str, Any]:
    """How a fold was trained, for its ``metrics.json``: epochs, steps, stop reason, machine and versions."""
    return {
        "epochs": state.epoch,
        "steps": state.step,
        "minutes": round(state.elapsed_s / 60, 2),
        "validation_minutes": round(state.validation_s / 60, 2),
        "stopped": state.stopped,
        "best_epoch": state.best_epoch,
        "best_val_dice_network_grid": state.best_metric,
        "threads": threads,
        "precision": precision,
        "machine": machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wall_minutes_this_run": round((time.perf_counter() - started) / 60, 2),
        "command": " ".join(["deepmia", *sys.argv[1:]]) if Path(sys.argv[0]).name == "deepmia" else None,
    }


def _write_split(path: Path, split: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    folds = data.get("folds", {})
    folds[str(split["fold"])] = {"train": split["train"], "val": split["val"]}
    data = {"fold": split["fold"], "train": split["train"], "val": split["val"], "test": split["test"], "folds": folds}
    path.write_text(json.dumps(data, indent=1) + "\n")


class _EpochLog(Callback):
    """Prints one line per epoch (the CLI passes its console)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.state.epoch:
            self.log(f"resumed from epoch {trainer.state.epoch} ({trainer.state.elapsed_s / 60:.1f} min done)")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        metrics = " ".join(f"{k}={v:.4f}" for k, v in row.items() if k.startswith("val_"))
        self.log(
            f"epoch {row['epoch']} loss={row['train_loss']:.4f} lr={row['lr']:.5f} "
            f"{row['seconds'] / 60:.1f} min {metrics}"
        )
