"""The 3D path end to end on synthetic volumes: plan, train (learns), COCO results with 3D boxes, FROC/CPM."""

from __future__ import annotations

import json

import pytest
from conftest import make_volume_dataset

from deepmia.cli.main import main
from deepmia.tasks.detect.evaluate import evaluate
from deepmia.tasks.detect.predict import Predictor
from deepmia.tasks.detect.train import train

TINY_3D = ["network_params.widths=[8,16,32,64]", "network_params.fpn_channels=16", "schedule.lr=0.002",
           "schedule.max_epochs=30", "schedule.batch_size=2", "schedule.threads=1", "schedule.precision=fp32"]


@pytest.mark.slow
def test_volumes_train_predict_and_evaluate(tmp_path, capsys):
    ds = make_volume_dataset(tmp_path / "balls")
    metrics = train(ds.root, tmp_path / "model", overrides=TINY_3D)
    plan = json.loads((tmp_path / "model" / "plan.json").read_text())
    assert plan["spatial_dims"] == 3 and all(len(s) == 3 for s in plan["anchors"]["base_shapes"])
    val = metrics["validation"]
    assert val["coco"]["map50"] > 0.5 and val["froc"]["cpm"] > 0.5, val["coco"]  # untrained: ~0
    assert val["froc_iou"] == 0.1  # the nodule criterion in 3D
    # 3D models and their inference settings are selected on the validation CPM (ties: mAP@0.5), not on mAP@0.5
    assert metrics["training"]["best_val_cpm_then_map50_no_tta"] > 0.5
    rows = plan["measurements"]["inference_choice"]
    assert all(r["selection"] == pytest.approx(r["cpm"] + r["map50"] / 1000) for r in rows)
    assert plan["inference"]["tta"] == max(rows, key=lambda r: r["selection"])["tta"]
    predictor = Predictor(tmp_path / "model")
    report = predictor.predict_path(ds.root / "images", tmp_path / "out")
    assert report["predicted"] == len(ds.cases)
    rows = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert rows and all(len(r["bbox"]) == 6 and min(r["bbox"][3:]) >= 0 and len(r["bbox_world"]) == 6 for r in rows)
    m = evaluate(tmp_path / "out", ds.root, split="val", n_resamples=0)
    assert m["coco"]["map50"] == pytest.approx(val["coco"]["map50"], abs=0.05)  # same model, image files
    assert main(["predict", str(tmp_path / "model"), str(ds.root / "images"), str(tmp_path / "fig"), "--figure"]) == 2
    assert "2D" in capsys.readouterr().err
