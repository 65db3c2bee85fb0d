"""``deepmia train detect`` and ``deepmia evaluate detect`` through the task's command module."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deepmia.cli.main import main


def test_train_and_evaluate_commands(shapes_dataset, tmp_path, detect_app):
    app = detect_app
    model = tmp_path / "model"
    sets = ["network_params.widths=[8,16,32,64]", "network_params.fpn_channels=16", "schedule.max_epochs=2",
            "schedule.threads=1", "schedule.precision=fp32"]
    args = ["train", "detect", "--dataset", str(shapes_dataset.root), "--out", str(model)]
    result = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "validation: mAP@0.5" in result.output
    assert json.loads((model / "plan.json").read_text())["schedule"]["max_epochs"] == 2
    assert main(["predict", str(model), str(shapes_dataset.root / "images"), str(tmp_path / "pred"), "--no-tta"]) == 0
    result = CliRunner().invoke(app, ["evaluate", "detect", str(tmp_path / "pred"), str(shapes_dataset.root),
                                      "--split", "val", "--out", str(tmp_path / "m"), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    assert "6 val images: mAP@[.5:.95]" in result.output and "CPM" in result.output
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    predicted = {r["image_id"] for r in json.loads((tmp_path / "pred" / "predictions.json").read_text())}
    outside = predicted - set(shapes_dataset.splits.folds[0].val)
    assert metrics["coco"]["map50_ci"]["n_resamples"] == 50
    assert metrics["predicted_images_outside_split"] == len(outside) > 0
    bad = CliRunner().invoke(app, ["train", "detect", "--dataset", str(shapes_dataset.root), "--out",
                                   str(tmp_path / "m2"), "--set", "schedule.nonsense=1"])
    assert bad.exit_code != 0 and "nonsense" in str(bad.exception)
