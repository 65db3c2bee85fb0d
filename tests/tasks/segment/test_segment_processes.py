"""``train_fold(processes=2)``: two processes train one fold (DistributedDataParallel), one writes it."""

from __future__ import annotations

import json

import pytest

from deepmia.tasks.segment.train import train_fold


@pytest.mark.slow
def test_two_processes_train_a_fold_with_the_plans_steps_and_batch(spheres, tiny, tmp_path):
    model = tmp_path / "model"
    summary = train_fold(spheres.root, model, fold=0, overrides=tiny, cache=tmp_path / "cache", workers=1,
                         processes=2, log=lambda m: None)
    training = summary["training"]
    assert training["processes"] == 2 and training["batch_per_process"] == 1  # the plan's batch of 2, shared
    plan = json.loads((model / "plan.json").read_text())
    assert plan["batch_size"] == 2  # the plan keeps the global batch
    rows = (model / "fold_0" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + plan["schedule"]["epochs"]  # one writer: no row twice
    assert (model / "fold_0" / "model_best.pt").is_file() and (model / "fold_0" / "metrics.json").is_file()
    assert 0 <= summary["mean"]["dice"]["mean"] <= 1 and summary["n_cases"] >= 1
