"""One small training loop composed from a model, an optimiser, a step function, batches and callbacks.

The loop owns what every task needs and nothing task-specific: mixed precision, gradient clipping, a poly
learning-rate schedule over the training budget (epochs and/or wall-clock seconds), validation and model
selection, an atomic checkpoint every epoch with resume after a kill, and logs (CSV, TensorBoard, a curve PNG).
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia._validate import look_up_option
from deepmia.engine.parallel import all_max, is_main, world_size, wrap
from deepmia.engine.runtime import autocast
from deepmia.errors import InvalidArgumentError

__all__ = [
    "build_optimizer", "TrainState", "Callback", "Trainer", "CSVLogger", "TensorBoardLogger", "CurvePlot", "poly_lr",
]

CHECKPOINT = "checkpoint_last.pt"
BEST = "model_best.pt"


@dataclass
class TrainState:
    """Progress of a run; saved in every checkpoint.

    Attributes:
        epoch: Completed epochs.
        step: Completed optimiser steps.
        elapsed_s: Training seconds so far, across resumed runs (validation included).
        validation_s: Of ``elapsed_s``, the seconds spent validating (other ranks: waiting for rank 0's).
        best_metric: Best value of the monitored metric (None before the first validation).
        best_epoch: Epoch of ``best_metric``.
        history: One row per epoch: epoch, step, lr, train_loss, seconds, and the validation metrics.
        stopped: Why training ended (``max_epochs``, ``time_budget``), empty while running.
    """

    epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    validation_s: float = 0.0
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""



def build_optimizer(
    model: torch.nn.Module, *, name: str = "adamw", lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """The optimiser a plan names: ``sgd`` (Nesterov momentum, nnU-Net's) or ``adamw``."""
    name = look_up_option(name, ("sgd", "adamw"), what="optimizer")
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

class Callback:
    """Hook into the loop; override what you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first (or resumed) epoch."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each epoch's checkpoint with that epoch's history row."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once when training stops."""


def poly_lr(base_lr: float, progress: float, *, power: float = 0.9, warmup: float = 0.0) -> float:
    """The poly schedule ``base_lr * (1 - progress) ** power`` after an optional linear warm-up fraction."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return base_lr * max(progress / warmup, 0.02)
    return base_lr * (1.0 - progress) ** power


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Train ``model`` by calling ``train_step(model, batch)`` on batches, epoch by epoch, within a budget.

    Args:
        model: The network (moved to ``device`` by the caller).
        optimizer: Its optimiser; its initial learning rates are the schedule's base rates.
        train_step: ``(model, batch) -> loss``; called inside autocast, the loop does backward and step.
        batches: Yields training batches forever.
        out_dir: Where checkpoints and logs go.
        steps_per_epoch: Optimiser steps per epoch.
        max_epochs: Upper bound on epochs.
        time_budget_s: Wall-clock budget in seconds for training (validation included), or None.
        validate: ``model -> {metric: value}``, run in eval mode without gradients every ``val_every`` epochs.
        val_every: Validate every this many epochs (and always after the last).
        monitor: Metric of ``validate`` that selects the best model; None keeps the last.
        mode: ``max`` or ``min`` for ``monitor``.
        lr_schedule: ``poly`` (decays to 0 over the budget) or ``constant``.
        warmup: Fraction of the budget with a linear learning-rate warm-up.
        precision: ``bf16`` or ``fp32`` (see :func:`deepmia.engine.runtime.choose_precision`).
        grad_clip: Maximum gradient norm, or None.
        callbacks: Extra :class:`Callback` objects; CSV, TensorBoard and curve logging are always on.
        resume: Continue from ``out_dir/checkpoint_last.pt`` when it exists.
        extra_state: Picklable data saved in the checkpoint (e.g. the plan), returned by :meth:`load_checkpoint`.

    Several processes (started by :func:`deepmia.engine.parallel.launch`) train one model together: the network
    is wrapped in DistributedDataParallel (gradients averaged over the ranks' batches), the ranks agree on the
    elapsed time after every step so they stop at the same step, and rank 0 alone validates, logs and writes
    checkpoints.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train_step: Callable[[torch.nn.Module, Any], torch.Tensor],
        batches: Iterator[Any],
        *,
        out_dir: str | os.PathLike[str],
        steps_per_epoch: int,
        max_epochs: int,
        time_budget_s: float | None = None,
        validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        val_every: int = 1,
        monitor: str | None = None,
        mode: str = "max",
        lr_schedule: str = "poly",
        warmup: float = 0.0,
        precision: str = "bf16",
        grad_clip: float | None = 12.0,
        callbacks: Sequence[Callback] = (),
        resume: bool = True,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        if steps_per_epoch < 1 or max_epochs < 1:
            raise InvalidArgumentError(
                f"steps_per_epoch and max_epochs must be >= 1, got {steps_per_epoch}, {max_epochs}"
            )
        if time_budget_s is not None and time_budget_s <= 0:
            raise InvalidArgumentError(f"time_budget_s must be > 0, got {time_budget_s}")
        self.model = model
        self.net = wrap(model)  # what trains: the model itself, or in DistributedDataParallel across processes
        self.optimizer = optimizer
        self.train_step = train_step
        self.batches = batches
        self.out_dir = Path(out_dir)
        self.steps_per_epoch = int(steps_per_epoch)
        self.max_epochs = int(max_epochs)
        self.time_budget_s = time_budget_s
        self.validate = validate
        self.val_every = max(1, int(val_every))
        self.monitor = monitor
        self.mode = look_up_option(mode, ("max", "min"), what="mode")
        self.lr_schedule = look_up_option(lr_schedule, ("poly", "constant"), what="lr_schedule")
        self.warmup = warmup
        self.precision = look_up_option(precision, ("fp32", "bf16"), what="precision")
        self.grad_clip = grad_clip
        self.callbacks = [CSVLogger(), TensorBoardLogger(), CurvePlot(), *callbacks] if is_main() else []
        self.resume = resume
        self.extra_state = extra_state or {}
        self.state = TrainState()
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]

    # ------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file the trainer saves to and resumes from."""
        return self.out_dir / CHECKPOINT

    def save_checkpoint(self) -> None:
        """Write model, optimiser, progress and RNG states atomically (a kill never leaves a torn file); rank 0 only."""
        if not is_main():
            return
        _atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "state": asdict(self.state),
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(),
                    "python": random.getstate(),
                },
                "extra": self.extra_state,
            },
            self.checkpoint_path,
        )

    def load_checkpoint(self) -> bool:
        """Restore from ``checkpoint_last.pt`` if present; returns whether it did."""
        if not self.checkpoint_path.exists():
            return False
        ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = TrainState(**ckpt["state"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        return True

    # ------------------------------------------------------------ loop
    def progress(self) -> float:
        """Fraction of the budget used: the larger of epochs done and seconds spent."""
        p = self.state.epoch / self.max_epochs
        if self.time_budget_s:
            p = max(p, self.state.elapsed_s / self.time_budget_s)
        return p

    def _set_lr(self) -> float:
        p = self.progress() if self.lr_schedule == "poly" else 0.0
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = poly_lr(base, p, warmup=self.warmup) if self.lr_schedule == "poly" else base
        return self.optimizer.param_groups[0]["lr"]

    def _improved(self, value: float) -> bool:
        best = self.state.best_metric
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best if self.mode == "max" else value < best

    def _epoch(self) -> dict[str, Any]:
        self.net.train()
        start = time.perf_counter()
        losses: list[float] = []
        parallel = world_size() > 1
        for _ in range(self.steps_per_epoch):
            lr = self._set_lr()
            batch = next(self.batches)
            with autocast(self.precision):
                loss = self.train_step(self.net, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {self.state.step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            losses.append(float(loss.detach()))
            self.state.step += 1
            self.state.elapsed_s += time.perf_counter() - start
            if self.time_budget_s and parallel:
                self.state.elapsed_s = all_max(self.state.elapsed_s)  # every rank stops at the same step
            start = time.perf_counter()
            if self.time_budget_s and self.state.elapsed_s >= self.time_budget_s:
                break  # the budget ends mid-epoch: the poly rate is 0 from here on, so further steps change nothing
        self.state.epoch += 1
        row: dict[str, Any] = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "lr": lr,
            "train_loss": float(np.mean(losses)),
            "seconds": round(self.state.elapsed_s, 2),
        }
        last = self.progress() >= 1.0
        if self.validate is not None and (self.state.epoch % self.val_every == 0 or last) and is_main():
            t = time.perf_counter()
            self.model.eval()
            with torch.no_grad(), autocast(self.precision):
                row.update(self.validate(self.model))
            self.state.elapsed_s += time.perf_counter() - t
            self.state.validation_s += time.perf_counter() - t
            row["seconds"] = round(self.state.elapsed_s, 2)
        if parallel:  # the others waited for rank 0's validation: that time counts for them too
            waited = time.perf_counter()
            self.state.elapsed_s = all_max(self.state.elapsed_s)
            self.state.validation_s += 0.0 if is_main() else time.perf_counter() - waited
        if not is_main():
            return row
        if self.monitor is None:
            self._save_best()
        elif self.monitor in row and self._improved(float(row[self.monitor])):
            self.state.best_metric = float(row[self.monitor])
            self.state.best_epoch = self.state.epoch
            self._save_best()
        return row

    def _save_best(self) -> None:
        if is_main():
            _atomic_save(self.model.state_dict(), self.out_dir / BEST)

    def fit(self) -> TrainState:
        """Train until ``max_epochs`` or the time budget; resumes from the last checkpoint if allowed."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self.load_checkpoint()
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.progress() < 1.0:
            row = self._epoch()
            self.state.history.append(row)
            self.save_checkpoint()
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
        if not self.state.stopped:
            self.state.stopped = "max_epochs" if self.state.epoch >= self.max_epochs else "time_budget"
            self.save_checkpoint()
        if not (self.out_dir / BEST).exists():
            self._save_best()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.state


class CSVLogger(Callback):
    """``log.csv``: one row per epoch, rewritten from the history (so a resumed run's file stays whole)."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each epoch with that epoch's row of the history."""
        rows = trainer.state.history
        keys = list(dict.fromkeys(k for r in rows for k in r))
        tmp = trainer.out_dir / "log.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, trainer.out_dir / "log.csv")


class TensorBoardLogger(Callback):
    """TensorBoard event files in ``out_dir/tensorboard`` (skipped, with a note in the log, without tensorboard)."""

    def __init__(self) -> None:
        self.writer: Any = None

    def on_train_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(trainer.out_dir / "tensorboard"), purge_step=trainer.state.epoch + 1)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each epoch with that epoch's row of the history."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last epoch."""
        if self.writer is not None:
            self.writer.close()


class CurvePlot(Callback):
    """``training_curve.png``: training loss and every validation metric against epochs."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called after each epoch with that epoch's row of the history."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = trainer.state.history
        metrics = [
            k
            for k in dict.fromkeys(k for r in rows for k in r)
            if k not in ("epoch", "step", "lr", "seconds", "train_loss")
        ]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], label="train loss", color="tab:blue")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        if metrics:
            ax2 = ax.twinx()
            for k in metrics:
                pts = [(r["epoch"], r[k]) for r in rows if k in r and isinstance(r[k], (int, float))]
                if pts:
                    ax2.plot(*zip(*pts, strict=True), marker=".", label=k)
            ax2.set_ylabel("validation")
            ax2.legend(loc="center right", fontsize=8)
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{trainer.out_dir.name}: epoch {trainer.state.epoch}")
        fig.tight_layout()
        fig.savefig(trainer.out_dir / "training_curve.png")
        plt.close(fig)
