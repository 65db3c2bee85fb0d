"""Detection metrics: COCO numbers against pycocotools, 3D IoU, FROC/CPM by brute force, bad input."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.metrics.detection import DetectionAccumulator, box_iou, coco_evaluate, froc


def random_scene(rng, n_images=25, n_classes=3):
    preds, gts = [], []
    for _i in range(n_images):
        m = rng.integers(0, 6)
        xy = rng.uniform(0, 200, (m, 2))
        wh = rng.uniform(5, 60, (m, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        gl = rng.integers(0, n_classes, m)
        # detections: jittered copies of most ground truths, some with the wrong class, plus false positives
        keep = rng.random(m) < 0.85
        jitter = gt[keep] + rng.normal(0, 4, (keep.sum(), 4))
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        k = rng.integers(0, 5)
        fxy = rng.uniform(0, 200, (k, 2))
        fp = np.concatenate([fxy, fxy + rng.uniform(5, 60, (k, 2))], axis=1)
        dup = jitter[: rng.integers(0, 2)] + 2.0 if keep.any() else np.zeros((0, 4))  # duplicate detections
        boxes = np.concatenate([jitter, fp, dup])
        labels = np.concatenate([gl[keep], rng.integers(0, n_classes, k), gl[keep][: len(dup)]])
        flip = rng.random(labels.size) < 0.1
        labels[flip] = rng.integers(0, n_classes, flip.sum())
        preds.append({"boxes": boxes, "scores": rng.random(labels.size), "labels": labels})
        gts.append({"boxes": gt, "labels": gl})
    if not any(len(g["labels"]) for g in gts):
        gts[0] = {"boxes": np.array([[1.0, 1.0, 20.0, 30.0]]), "labels": np.array([0])}
    return preds, gts


def pycocotools_eval(preds, gts, n_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        images.append({"id": i, "width": 300, "height": 300})
        for b, c in zip(g["boxes"], g["labels"], strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(p["boxes"], p["scores"], p["labels"], strict=True):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": float(s),
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_matches_pycocotools(seed):
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(seed)
    preds, gts = random_scene(rng)
    ev = pycocotools_eval(preds, gts, 3)
    ours = coco_evaluate(preds, gts, class_names={0: "a", 1: "b", 2: "c"})
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert ours["map50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert ours["map75"] == pytest.approx(ev.stats[2], abs=1e-6)
    assert ours["ar100"] == pytest.approx(ev.stats[8], abs=1e-6)
    precision = ev.eval["precision"][:, :, :, 0, 2]  # (T, R, K) at area 'all', maxDets 100
    for k, name in enumerate("abc"):
        p = precision[:, :, k]
        if (p > -1).any():
            assert ours["per_class"][name]["ap"] == pytest.approx(p.mean(), abs=1e-6)
            assert ours["per_class"][name]["ap50"] == pytest.approx(p[0].mean(), abs=1e-6)


def test_3d_iou_by_volume():
    a = np.array([[0, 0, 0, 2, 2, 2]])
    b = np.array([[1, 1, 1, 3, 3, 3], [0, 0, 0, 2, 2, 1], [5, 5, 5, 6, 6, 6]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 15, 0.5, 0.0])
    assert box_iou(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))[0, 0] == 0  # zero-area: overlaps nothing


def test_3d_perfect_detections_score_one():
    rng = np.random.default_rng(5)
    gts, preds = [], []
    for _ in range(4):
        lo = rng.uniform(0, 50, (3, 3))
        boxes = np.concatenate([lo, lo + rng.uniform(3, 30, (3, 3))], axis=1)
        gts.append({"boxes": boxes, "labels": np.zeros(3, int)})
        preds.append({"boxes": boxes, "scores": rng.random(3), "labels": np.zeros(3, int)})
    out = coco_evaluate(preds, gts)
    assert out["map"] == pytest.approx(1.0) and out["ar100"] == pytest.approx(1.0)
    assert froc(preds, gts, n_resamples=0)["cpm"] == pytest.approx(1.0)


def brute_force_sensitivity(tp_scores, fp_scores, n_gt, n_images, rate):
    """Highest sensitivity over thresholds whose FP rate <= rate, for step points (no interpolation)."""
    best = 0.0
    for t in np.concatenate([tp_scores, fp_scores]):
        if np.sum(fp_scores >= t) / n_images <= rate:
            best = max(best, np.sum(tp_scores >= t) / n_gt)
    return best


def test_froc_on_known_points():
    # 2 images, 4 lesions; one-dimensional layout so the hits are obvious
    gt = [
        {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]])},
        {"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]])},
    ]
    pred = [
        {
            "boxes": np.array([[0, 0, 10, 10], [1, 1, 10, 10], [100, 100, 110, 110]]),
            "scores": np.array([0.9, 0.95, 0.8]),
        },
        {
            "boxes": np.array([[50, 50, 60, 60], [200, 200, 210, 210], [300, 300, 310, 310]]),
            "scores": np.array([0.3, 0.6, 0.2]),
        },
    ]
    out = froc(pred, gt, n_resamples=0, fp_rates=[0.5, 1.0, 8.0])
    # lesion scores 0.95 (the 0.9 duplicate is ignored), 0.3; false positives 0.8, 0.6, 0.2
    tp, fp = np.array([0.95, 0.3]), np.array([0.8, 0.6, 0.2])
    for rate, value in zip([0.5, 1.0], out["sensitivity"][:2], strict=True):
        assert value == pytest.approx(brute_force_sensitivity(tp, fp, 4, 2, rate))
    assert out["sensitivity"][2] == pytest.approx(0.5)  # flat after the last point: 2 of 4 found
    centre = froc(pred, gt, hit="center", n_resamples=0)
    assert centre["n_gt"] == 4


def test_accumulator_bootstrap_and_bad_input():
    rng = np.random.default_rng(7)
    preds, gts = random_scene(rng, n_images=12)
    acc = DetectionAccumulator({0: "a", 1: "b", 2: "c"}, n_resamples=100)
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        acc.update(p, g, image_id=f"img{i}")
    acc.update({"boxes": np.zeros((0, 4)), "scores": [], "labels": []}, {"boxes": [], "labels": []})  # negative image
    out = acc.aggregate()
    assert out["n_images"] == 13
    ci = out["froc"]["cpm_ci"]
    assert ci["low"] <= out["froc"]["cpm"] <= ci["high"]
    assert out["coco"]["map_ci"]["low"] <= out["coco"]["map"] <= out["coco"]["map_ci"]["high"]
    with pytest.raises(InvalidArgumentError, match="max corner"):
        acc.update({"boxes": [[5, 5, 1, 1]], "scores": [0.5], "labels": [0]}, {"boxes": [], "labels": []})
    with pytest.raises(InvalidArgumentError, match="unknown class"):
        acc.update({"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [7]}, {"boxes": [], "labels": []})
    with pytest.raises(InvalidArgumentError, match="scores"):
        acc.update({"boxes": [[0, 0, 1, 1]], "labels": [0]}, {"boxes": [], "labels": []})


@pytest.mark.shared_data
def test_coco_matches_pycocotools_on_bccd_test_boxes(shared_data):
    """Real BCCD ground truth (test list) with simulated detections: jittered boxes, misses, false positives."""
    pytest.importorskip("pycocotools")
    import xml.etree.ElementTree as ET

    root = shared_data / "bccd" / "BCCD"
    names = {"RBC": 0, "WBC": 1, "Platelets": 2}
    rng = np.random.default_rng(11)
    preds, gts = [], []
    for stem in (root / "ImageSets" / "Main" / "test.txt").read_text().split():
        objects = ET.parse(root / "Annotations" / f"{stem}.xml").findall("object")
        boxes = np.array(
            [[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        ).reshape(-1, 4)
        labels = np.array([names[o.find("name").text.strip()] for o in objects], int)
        gts.append({"boxes": boxes, "labels": labels})
        keep = rng.random(len(labels)) < 0.9
        det = boxes[keep] + rng.normal(0, 6, (keep.sum(), 4))
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        fp_xy = rng.uniform(0, 600, (3, 2))
        det = np.concatenate([det, np.concatenate([fp_xy, fp_xy + 40], axis=1)])
        det_labels = np.concatenate([labels[keep], rng.integers(0, 3, 3)])
        preds.append({"boxes": det, "scores": rng.random(len(det_labels)), "labels": det_labels})
    ev = pycocotools_eval(preds, gts, 3)
    ours = coco_evaluate(preds, gts, class_names={0: "RBC", 1: "WBC", 2: "Platelets"})
    assert len(gts) > 50 and ours["map50"] > 0.3
    assert [ours["map"], ours["map50"], ours["map75"], ours["ar100"]] == pytest.approx(ev.stats[[0, 1, 2, 8]], abs=1e-6)
