"""``train(processes=2)``: each ensemble member trained by two processes together (DistributedDataParallel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = ["network_params.widths=[8,16,16,32]", "schedule.max_epochs=2", "schedule.batch_size=16", "schedule.threads=1",
        "members=1"]


@pytest.mark.slow
def test_two_processes_train_a_member_that_predicts(shared_data: Path, tmp_path: Path) -> None:
    from deepmia.data.importers import import_medmnist
    from deepmia.io import read_image
    from deepmia.tasks._base import load_predictor
    from deepmia.tasks.classify.train import train

    data = tmp_path / "ds"
    import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", data, limit=32)
    metrics = train(data, tmp_path / "m", overrides=TINY, processes=2)
    history = json.loads((tmp_path / "m" / "metrics.json").read_text())["training"]["members"]
    assert [h["processes"] for h in history] == [2] and history[0]["epochs"] == 2
    assert 0.0 <= metrics["validation"]["auroc"]["macro"]["auc"] <= 1.0
    log = (tmp_path / "m" / "fold_0" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 3 and "val_auroc" in log[0]  # one writer: a header and one row per epoch
    image = next((data / "images").rglob("*.png"))
    result = load_predictor(tmp_path / "m").predict(read_image(image))
    assert abs(float(result.probabilities.sum()) - 1.0) < 1e-5
