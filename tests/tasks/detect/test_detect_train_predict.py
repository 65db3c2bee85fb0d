"""End to end on synthetic shapes: train (learns), predict (COCO results, figures, sliding window), evaluate."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import draw_objects, make_dataset
from typer.testing import CliRunner

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.metrics.detection import box_iou
from deepmia.report.model_card import write_model_card
from deepmia.tasks.detect.evaluate import evaluate
from deepmia.tasks.detect.predict import Predictor
from deepmia.tasks.detect.train import train

TINY = ["network_params.widths=[8,16,32,64]", "network_params.fpn_channels=32", "schedule.lr=0.0015",
        "schedule.max_epochs=20", "schedule.batch_size=4", "schedule.threads=1", "schedule.precision=fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    ds = make_dataset(root / "shapes")
    metrics = train(ds.root, root / "model", overrides=TINY)
    write_model_card(root / "model", task="detect", dataset=ds)  # as `deepmia train detect` does after training
    return ds, root / "model", metrics


@pytest.mark.slow
def test_training_learns_and_writes_the_model_directory(trained):
    ds, model, metrics = trained
    for name in ("plan.json", "split.json", "metrics.json", "README.md", "fold_0/model_best.pt"):
        assert (model / name).exists(), name
    plan = json.loads((model / "plan.json").read_text())
    assert plan["task"] == "detection" and plan["schedule"]["precision"] in ("bf16", "fp32")
    split = json.loads((model / "split.json").read_text())
    assert split["val"] == ds.splits.folds[0].val and split["test"] == ds.splits.test
    log = (model / "fold_0" / "log.csv").read_text().splitlines()
    assert len(log) == 21  # header + 20 epochs
    val = metrics["validation"]
    assert val["coco"]["map50"] > 0.5, val["coco"]  # an untrained detector scores ~0
    assert "map50_ci" in val["coco"] and val["froc"]["cpm"] > 0.3
    assert "mAP@0.5" in (model / "README.md").read_text()
    tried = plan["measurements"]["inference_choice"]  # TTA and the fusion threshold were chosen on validation
    assert len(tried) == 4 and max(r["map50"] + r["map"] for r in tried) == pytest.approx(
        val["coco"]["map50"] + val["coco"]["map"])


def test_predict_writes_coco_results_and_figures(trained, tmp_path):
    ds, model, _ = trained
    src = tmp_path / "in"
    src.mkdir()
    for cid in ds.splits.test:
        shutil.copy(ds.root / "images" / f"{cid}.png", src)
    (src / "readme.txt").write_text("not an image")
    # the skipped file makes the command exit 1 (some inputs failed), after writing
    assert main(["predict", str(model), str(src), str(tmp_path / "out"), "--figure"]) == 1
    out = tmp_path / "out"
    results = json.loads((out / "predictions.json").read_text())
    cats = json.loads((out / "categories.json").read_text())
    assert [c["name"] for c in cats] == ["bar", "square"]
    assert {r["image_id"] for r in results} <= set(ds.splits.test)
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score"} and r["category_id"] in (1, 2)
        x, y, w, h = r["bbox"]
        assert w >= 0 and h >= 0 and x >= 0 and y >= 0 and x + w <= 64.01 and y + h <= 64.01
    assert sorted(p.stem for p in (out / "figures").iterdir()) == sorted(ds.splits.test)
    with (out / "skipped.csv").open() as f:  # one skip-list format for every task
        assert [r["file"] for r in csv.DictReader(f)] == ["readme.txt"]


def test_evaluate_cli_matches_pycocotools(trained, tmp_path, detect_app):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds, model, _ = trained
    out = tmp_path / "pred"
    Predictor(model).predict_path(ds.root / "images", out)
    result = CliRunner().invoke(detect_app, ["evaluate", "detect", str(out), str(ds.root), "--split", "all", "--json",
                                      "--resamples", "0"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.output)
    ids = {c.id: i for i, c in enumerate(ds.cases)}
    cats = [{"id": 1, "name": "bar"}, {"id": 2, "name": "square"}]
    gt = {"images": [{"id": i} for i in ids.values()], "categories": cats,
          "annotations": [{"id": k + 1, "image_id": ids[c.id], "category_id": 1 + ["bar", "square"].index(b.label),
                           "bbox": [b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]],
                           "area": (b.box[2] - b.box[0]) * (b.box[3] - b.box[1]), "iscrowd": 0}
                          for k, (c, b) in enumerate((c, b) for c in ds.cases for b in c.boxes)]}
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    dets = [{**r, "image_id": ids[r["image_id"]]} for r in json.loads((out / "predictions.json").read_text())]
    ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 2]  # (IoU, recall, class) at area "all", 100 detections
    assert ours["coco"]["map"] == pytest.approx(precision.mean(), abs=1e-6)
    assert ours["coco"]["map50"] == pytest.approx(precision[0].mean(), abs=1e-6)
    assert ours["froc"]["n_images"] == len(ds.cases) and ours["predicted_images_outside_split"] == 0


def test_sliding_window_on_an_image_larger_than_the_input(trained):
    _, model, _ = trained
    predictor = Predictor(model, tta=False)
    rng = np.random.default_rng(5)
    pixels, objects = draw_objects(rng, 160, 8)  # 160 px > the 64 px network input
    image = Image(pixels.T[None].astype(np.uint8), np.eye(4))
    boxes, scores, labels = predictor.predict_image(image)
    assert boxes.shape[1] == 4 and (boxes[:, 2:] <= 160).all()
    truth = np.array([o["box"] for o in objects], float)
    confident = boxes[scores > 0.3]
    found = (box_iou(truth, confident).max(axis=1) >= 0.5).mean() if len(confident) else 0.0
    assert found >= 0.5


def test_bad_predictions_are_refused(trained, tmp_path):
    ds, _, _ = trained
    pred = tmp_path / "p"
    pred.mkdir()
    (pred / "categories.json").write_text(json.dumps([{"id": 1, "name": "circle"}]))
    (pred / "predictions.json").write_text(json.dumps([]))
    with pytest.raises(InvalidArgumentError, match="circle"):
        evaluate(pred, ds.root)
    (pred / "categories.json").write_text(json.dumps([{"id": 1, "name": "bar"}]))
    row = {"image_id": ds.splits.test[0], "category_id": 1, "bbox": [5, 5, 2, 4], "score": 0.5}
    (pred / "predictions.json").write_text(json.dumps([{**row, "bbox": [5, 5, -2, 4]}]))
    with pytest.raises(InvalidArgumentError, match="entry 0"):
        evaluate(pred, ds.root)
    (pred / "predictions.json").write_text(json.dumps([{**row, "category_id": 7}]))
    with pytest.raises(InvalidArgumentError, match="unknown category_id 7"):
        evaluate(pred, ds.root)
    (pred / "predictions.json").write_text(json.dumps([{**row, "image_id": "elsewhere"}]))
    with pytest.raises(InvalidArgumentError, match="no predicted image"):
        evaluate(pred, ds.root)
    zero_area = {**row, "bbox": [5, 5, 0, 4]}  # allowed: it overlaps nothing
    outside = {**row, "image_id": ds.splits.folds[0].train[0]}
    (pred / "predictions.json").write_text(json.dumps([zero_area, outside]))
    m = evaluate(pred, ds.root, n_resamples=0)
    assert m["predicted_images_outside_split"] == 1 and m["images_without_predictions"] == len(ds.splits.test) - 1


def test_train_refuses_a_dataset_without_boxes(tmp_path):
    ds = make_dataset(tmp_path / "neg", n_train=4, n_val=2, n_test=0, negatives=4)
    data = json.loads((ds.root / "dataset.json").read_text())
    for c in data["cases"]:
        c["boxes"] = []
    (ds.root / "dataset.json").write_text(json.dumps(data))
    from deepmia.errors import DatasetError

    with pytest.raises(DatasetError, match="no boxes"):
        train(ds.root, tmp_path / "m", overrides=TINY)
