"""The shipped ``models/bccd`` through ``deepmia predict`` on real BCCD test images: valid COCO results that find
the annotated white blood cells."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.metrics.detection import box_iou

MODEL = Path(__file__).resolve().parents[3] / "models" / "bccd"
CLASSES = ["Platelets", "RBC", "WBC"]


def voc_boxes(xml: Path, label: str) -> np.ndarray:
    """Corner boxes ``(N, 4)`` of one class in a VOC annotation (1-based inclusive -> pixel edges)."""
    boxes = []
    for obj in ET.parse(xml).getroot().iter("object"):
        if obj.findtext("name") == label:
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x0 - 1, y0 - 1, x1, y1])
    return np.asarray(boxes).reshape(-1, 4)


def test_predict_shipped_model_on_bccd_test_images(shared_data: Path, tmp_path: Path):
    if not (MODEL / "plan.json").exists():
        pytest.skip("models/bccd not shipped")
    voc = shared_data / "bccd" / "BCCD"
    if not voc.is_dir():
        pytest.skip(f"{voc} not present")
    stems = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()[:2]
    src = tmp_path / "in"
    src.mkdir()
    for stem in stems:
        shutil.copy(voc / "JPEGImages" / f"{stem}.jpg", src)

    assert main(["predict", str(MODEL), str(src), str(tmp_path / "out")]) == 0

    categories = json.loads((tmp_path / "out" / "categories.json").read_text())
    assert [c["name"] for c in sorted(categories, key=lambda c: c["id"])] == CLASSES
    results = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == set(stems)
    for r in results:
        assert r["category_id"] in (1, 2, 3)
        x, y, w, h = r["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
        assert 0 < r["score"] <= 1
    for stem in stems:
        mine = [r for r in results if r["image_id"] == stem and r["score"] >= 0.3]
        assert any(r["category_id"] == 2 for r in mine), f"{stem}: no confident red blood cell"
        wbc = np.asarray([[x, y, x + w, y + h] for r in mine if r["category_id"] == 3
                          for x, y, w, h in [r["bbox"]]]).reshape(-1, 4)
        truth = voc_boxes(voc / "Annotations" / f"{stem}.xml", "WBC")
        assert len(truth) and len(wbc), f"{stem}: no white blood cell annotated or found"
        assert (box_iou(truth, wbc).max(axis=1) >= 0.5).all(), f"{stem}: an annotated WBC was missed"
