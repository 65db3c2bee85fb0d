"""The time budget covers the whole segmentation fold, and the epoch length comes from the measured step and
validation times instead of a fixed 250 steps (CHASE_DB1 at 6 s per step got one epoch in 20 minutes)."""

from __future__ import annotations

import json
import time

import pytest

from deepmia.tasks.segment.train import plan_epochs, train_fold


def test_plan_epochs_from_step_and_validation_time() -> None:
    # CHASE_DB1 on a 2-core CPU: 6 s per step, 30 s per validation, ~17 minutes of training.
    steps, every = plan_epochs(1000, 6.0, 30.0)
    assert steps < 250 and every == 1
    epochs = (1000 - 30 * 6) // (6 * steps)
    assert epochs >= 5  # several epochs and validations, not one
    # A fast model with a long budget keeps nnU-Net's 250 steps and validates about 20 times.
    steps, every = plan_epochs(4 * 3600, 0.3, 5.0)
    assert steps == 250 and 15 <= (4 * 3600 / (0.3 * 250)) / every <= 25
    # Validation slower than the whole budget: half of it still trains, one epoch validated once at the end.
    assert plan_epochs(10, 1.0, 60.0) == (5, 1)


@pytest.mark.slow
def test_segmentation_budget_covers_the_fold_and_plans_epochs(spheres, tiny, tmp_path) -> None:
    overrides = [o for o in tiny if not o.startswith(("schedule.steps_per_epoch", "schedule.epochs"))]
    budget = 25.0
    t = time.perf_counter()
    summary = train_fold(spheres.root, tmp_path / "m", fold=0, time_budget_s=budget,
                         overrides=[*overrides, "schedule.epochs=1000"], cache=tmp_path / "cache", workers=1,
                         log=lambda m: None)
    elapsed = time.perf_counter() - t
    plan = json.loads((tmp_path / "m" / "plan.json").read_text())
    assert plan["schedule"]["steps_per_epoch"] != 250  # planned from the measured step time
    # The trainer gets what planning, preprocessing and the final validation leave (it used to get all of it);
    # the whole call may overrun only by a step and a validation (loose: the test machine is shared).
    assert summary["training"]["minutes"] * 60 < budget * 0.8
    assert elapsed <= budget + 15, f"{elapsed:.1f} s for a {budget:.0f} s budget"


@pytest.mark.slow
def test_a_users_validation_interval_is_kept_when_epochs_are_planned(spheres, tiny, tmp_path) -> None:
    overrides = [o for o in tiny if not o.startswith(("schedule.steps_per_epoch", "schedule.epochs"))]
    train_fold(spheres.root, tmp_path / "m", fold=0, time_budget_s=15.0,
               overrides=[*overrides, "schedule.epochs=1000", "schedule.val_every=7"], cache=tmp_path / "cache",
               workers=1, log=lambda m: None)
    schedule = json.loads((tmp_path / "m" / "plan.json").read_text())["schedule"]
    assert schedule["val_every"] == 7 and schedule["steps_per_epoch"] != 250  # kept; the other one planned
