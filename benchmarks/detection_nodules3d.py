"""Benchmark: 3D detection of synthetic lung nodules (3-30 mm spheres and ellipsoids in CT-like volumes): FROC, CPM.

The volumes are made in code (seeded): 1 mm isotropic CT in Hounsfield units with lung parenchyma (-850 HU with
smooth texture), a few blurred vessels (+ contrast, the usual source of false positives), soft-tissue nodules
(-50..+60 HU) whose diameters are log-uniform in 3-30 mm, some elongated along one axis (ellipsoids), with a
partial-volume edge, and scanner noise (25 HU). A fifth of the volumes hold no nodule. The boxes are the
ellipsoids' exact extents. Training uses ``deepmia.tasks.detect.train`` with a wall-clock budget; the test
volumes are predicted by the model directory's Predictor (with its TTA choice) and scored by the LUNA16 FROC
(hit: IoU >= 0.1) and CPM with a bootstrap interval over volumes, plus the sensitivity per nodule size at the
operating point of 1 false positive per volume.

Usage:
    python benchmarks/detection_nodules3d.py --time-budget 1800 [--volumes 120] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from deepmia.data.dataset import Dataset
from deepmia.image import Image
from deepmia.io import write_image
from deepmia.metrics.detection import box_iou
from deepmia.tasks.detect.evaluate import reference_of, score
from deepmia.tasks.detect.predict import Predictor
from deepmia.tasks.detect.train import train

HERE = Path(__file__).resolve().parent
SIZE_BINS = (("3-6 mm", 3.0, 6.0), ("6-10 mm", 6.0, 10.0), ("10-30 mm", 10.0, 30.01))


def make_volume(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict]]:
    """One CT-like volume (HU, 1 mm voxels) and its nodule boxes (voxel-edge corners)."""
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (size,) * 3), 3) * 120
    vol = -850 + tex
    grid = np.indices((size,) * 3, dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):  # vessels: blurred random segments
        a, b = rng.uniform(0, size, 3), rng.uniform(0, size, 3)
        t = np.linspace(0, 1, 4 * size)[:, None]
        pts = np.round(a + t * (b - a)).astype(int).clip(0, size - 1)
        line = np.zeros((size,) * 3, np.float32)
        line[pts[:, 0], pts[:, 1], pts[:, 2]] = 1
        vessel = ndimage.gaussian_filter(line, rng.uniform(0.8, 1.6))
        vol += 900 * vessel / max(vessel.max(), 1e-6)
    boxes = []
    n = 0 if rng.random() < 0.2 else int(rng.integers(1, 4))
    for _ in range(n):
        diameter = float(np.exp(rng.uniform(np.log(3), np.log(30))))
        semi = np.full(3, diameter / 2)
        if rng.random() < 0.5:  # ellipsoid: one axis 0.6-0.9 of the others
            semi[rng.integers(3)] *= rng.uniform(0.6, 0.9)
        centre = rng.uniform(semi + 1, size - semi - 1)
        r2 = sum(((grid[d] + 0.5 - centre[d]) / semi[d]) ** 2 for d in range(3))
        mask = ndimage.gaussian_filter((r2 <= 1).astype(np.float32), 0.7)  # partial-volume edge
        vol = vol * (1 - mask) + rng.uniform(-50, 60) * mask
        boxes.append({"label": "nodule", "box": [*(centre - semi).tolist(), *(centre + semi).tolist()],
                      "diameter_mm": diameter})
    vol += rng.normal(0, 25, vol.shape)
    return vol.astype(np.float32), boxes


def make_dataset(root: Path, *, volumes: int, size: int, seed: int) -> tuple[Dataset, dict[str, float]]:
    """The dataset folder (60% train, 15% val, 25% test) and each nodule's diameter by ``case/index``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    cases, diameters = [], {}
    for i in range(volumes):
        cid = f"vol{i:03d}"
        vol, boxes = make_volume(rng, size)
        write_image(Image(vol[None], np.eye(4)), root / "images" / f"{cid}.nii.gz")
        for k, b in enumerate(boxes):
            diameters[f"{cid}/{k}"] = b.pop("diameter_mm")
        cases.append({"id": cid, "patient_id": cid, "images": [f"images/{cid}.nii.gz"], "boxes": boxes,
                      "shape": [size] * 3})
    ids = [c["id"] for c in cases]
    n_tr, n_val = int(0.6 * volumes), int(0.15 * volumes)
    ds = Dataset.create(root, name="synthetic-nodules", task="detection", channels=[{"name": "CT", "modality": "CT"}],
                        labels=["nodule"], cases=cases, license="generated in code (no license needed)",
                        splits={"folds": [{"train": ids[:n_tr], "val": ids[n_tr:n_tr + n_val]}],
                                "test": ids[n_tr + n_val:]})
    ds.save()
    return ds, diameters


def sensitivity_by_size(preds: dict, refs: dict, diameters: dict, threshold: float) -> dict[str, dict]:
    """Fraction of nodules per diameter bin hit (IoU >= 0.1) by a detection scoring at least ``threshold``."""
    hits: dict[str, list[bool]] = {name: [] for name, _, _ in SIZE_BINS}
    for cid, ref in refs.items():
        p = preds[cid]
        kept = p["boxes"][p["scores"] >= threshold]
        iou = box_iou(ref["boxes"], kept)
        for k in range(len(ref["boxes"])):
            d = diameters[f"{cid}/{k}"]
            name = next(name for name, lo, hi in SIZE_BINS if lo <= d < hi)
            hits[name].append(bool(iou.shape[1] and iou[k].max() >= 0.1))
    return {k: {"n": len(v), "sensitivity": float(np.mean(v)) if v else None} for k, v in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data",
                        help="shared data root (unused: the volumes are generated)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "deepmia-nodules3d",
                        help="folder for the generated dataset and the model (re-used when present)")
    parser.add_argument("--volumes", type=int, default=120)
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels (1 mm)")
    parser.add_argument("--time-budget", type=float, default=1800.0, help="training seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="plan override key=value")
    args = parser.parse_args()
    data_dir, model_dir = args.work / "data", args.work / "model"
    if (data_dir / "dataset.json").exists():
        ds = Dataset.load(data_dir)
        diameters = json.loads((args.work / "diameters.json").read_text())
    else:
        ds, diameters = make_dataset(data_dir, volumes=args.volumes, size=args.size, seed=args.seed)
        (args.work / "diameters.json").write_text(json.dumps(diameters))
    t = time.perf_counter()
    metrics = train(ds.root, model_dir, time_budget_s=args.time_budget, overrides=args.set, progress=print)
    train_s = time.perf_counter() - t
    predictor = Predictor(model_dir)
    refs, _ = reference_of(ds, ds.splits.test)
    t = time.perf_counter()
    preds = {}
    for cid in ds.splits.test:
        boxes, scores, labels = predictor.predict_image(ds.read_image(cid))
        preds[cid] = {"boxes": boxes, "scores": scores, "labels": labels}
    predict_s = (time.perf_counter() - t) / len(ds.splits.test)
    result = score(preds, refs, ["nodule"])
    froc = result["froc"]
    threshold = threshold_at(preds, refs, 1.0)
    out = {
        "benchmark": "detection_nodules3d",
        "data": f"{args.volumes} synthetic CT volumes {args.size}^3 at 1 mm (seed {args.seed}); "
                f"test {len(ds.splits.test)} volumes, {froc['n_gt']} nodules",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": 2},
        "train_seconds": round(train_s, 1),
        "epochs": metrics["training"]["epochs"],
        "validation_map50": metrics["validation"]["coco"]["map50"],
        "test": {"cpm": froc["cpm"], "cpm_ci": froc.get("cpm_ci"),
                 "sensitivity_at": dict(zip(map(str, froc["fp_rates"]), froc["sensitivity"], strict=True)),
                 "map50": result["coco"]["map50"], "map": result["coco"]["map"],
                 "sensitivity_by_size_at_1fp": sensitivity_by_size(preds, refs, diameters, threshold)},
        "predict_seconds_per_volume": round(predict_s, 2),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "detection_nodules3d.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    ci = froc.get("cpm_ci") or {}
    rows = "\n".join(f"| {k} | {v['n']} | {v['sensitivity']:.3f} |" if v["sensitivity"] is not None else
                     f"| {k} | 0 | - |" for k, v in out["test"]["sensitivity_by_size_at_1fp"].items())
    md = (f"### 3D detection: synthetic nodules\n\n{out['data']}; trained {train_s / 60:.0f} min on a 2-core CPU "
          f"({out['epochs']} epochs).\n\n| metric | value |\n|---|---|\n"
          f"| CPM (FROC, IoU >= 0.1) | {froc['cpm']:.3f} [{ci.get('low', float('nan')):.3f}, "
          f"{ci.get('high', float('nan')):.3f}] |\n| mAP@0.5 | {result['coco']['map50']:.3f} |\n"
          f"| prediction | {predict_s:.2f} s/volume |\n\n| nodule size | n | sensitivity at 1 FP/volume |\n"
          f"|---|---|---|\n{rows}\n")
    (HERE / "results" / "detection_nodules3d.md").write_text(md)
    print(md)


def threshold_at(preds: dict, refs: dict, fp_per_volume: float) -> float:
    """The lowest score threshold whose false positives (detections hitting no nodule) stay within the rate."""
    fp_scores = []
    for cid, ref in refs.items():
        p = preds[cid]
        iou = box_iou(p["boxes"], ref["boxes"])
        hit = iou.max(axis=1) >= 0.1 if iou.shape[1] else np.zeros(len(p["boxes"]), bool)
        fp_scores.extend(p["scores"][~hit].tolist())
    fp_scores = np.sort(fp_scores)[::-1]
    allowed = int(fp_per_volume * len(refs))  # that many false positives in all
    return float(fp_scores[allowed]) + 1e-9 if allowed < len(fp_scores) else 0.0


if __name__ == "__main__":
    main()
