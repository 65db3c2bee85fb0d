"""The training loop: learns, checkpoints every epoch, resumes, honours its budget, logs."""

from __future__ import annotations

import pytest
import torch

from deepmia.engine.trainer import Trainer, poly_lr
from deepmia.errors import InvalidArgumentError


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    return x, y


def _batches(x, y, size=32):
    # Indices come from torch's global RNG, which checkpoints save and restore.
    while True:
        idx = torch.randint(len(x), (size,))
        yield x[idx], y[idx]


def _trainer(tmp_path, *, max_epochs=6, resume=True, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(m, batch):
        xb, yb = batch
        return torch.nn.functional.mse_loss(m(xb).squeeze(1), yb)

    def validate(m):
        return {"val_loss": float(torch.nn.functional.mse_loss(m(x).squeeze(1), y))}

    kw.setdefault("lr_schedule", "constant")
    return Trainer(
        model,
        opt,
        step,
        _batches(x, y),
        out_dir=tmp_path,
        steps_per_epoch=8,
        max_epochs=max_epochs,
        validate=validate,
        monitor="val_loss",
        mode="min",
        precision="fp32",
        resume=resume,
        **kw,
    )


def test_training_reduces_the_loss_and_writes_its_files(tmp_path):
    state = _trainer(tmp_path).fit()
    losses = [r["val_loss"] for r in state.history]
    assert losses[-1] < 0.1 * losses[0]
    assert state.epoch == 6 and state.stopped == "max_epochs" and state.best_epoch is not None
    for name in ("checkpoint_last.pt", "model_best.pt", "log.csv", "training_curve.png"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").iterdir())
    assert len((tmp_path / "log.csv").read_text().strip().splitlines()) == 7


def test_resume_continues_where_it_stopped(tmp_path):
    first = _trainer(tmp_path, max_epochs=3).fit()
    assert first.epoch == 3
    # A new trainer with a larger budget picks up the checkpoint instead of starting again.
    second = _trainer(tmp_path, max_epochs=5).fit()
    assert second.epoch == 5 and second.step == 5 * 8
    assert [r["epoch"] for r in second.history] == [1, 2, 3, 4, 5]
    fresh = _trainer(tmp_path / "other", max_epochs=5).fit()
    # Same seeds, same data: the resumed run ends exactly where an uninterrupted one does.
    assert second.history[-1]["val_loss"] == pytest.approx(fresh.history[-1]["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_time_budget_stops_training(tmp_path):
    state = _trainer(tmp_path, max_epochs=10_000, time_budget_s=0.5).fit()
    assert state.stopped == "time_budget" and state.epoch < 10_000


def test_time_budget_ends_an_epoch_early(tmp_path):
    import time

    trainer = _trainer(tmp_path, max_epochs=10_000, time_budget_s=0.2)
    step = trainer.train_step

    def slow(m, batch):  # 8 steps of 0.05 s: the budget runs out inside the first epoch
        time.sleep(0.05)
        return step(m, batch)

    trainer.train_step = slow
    state = trainer.fit()
    assert state.epoch == 1 and state.stopped == "time_budget"
    assert 4 <= state.step < 8  # stopped at the first step past 0.2 s, not at the end of the epoch
    assert "val_loss" in state.history[-1]  # the last (short) epoch is still validated


def test_poly_schedule():
    assert poly_lr(1.0, 0.0) == 1.0 and poly_lr(1.0, 1.0) == 0.0
    assert poly_lr(1.0, 0.5) == pytest.approx(0.5**0.9)
    assert poly_lr(1.0, 0.01, warmup=0.1) == pytest.approx(0.1)


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError):
        _trainer(tmp_path, max_epochs=0)
    with pytest.raises(InvalidArgumentError, match="time_budget_s"):
        _trainer(tmp_path, time_budget_s=-1)
