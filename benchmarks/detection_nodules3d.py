"""Benchmark: 3D detection of synthetic lung nodules (3-30 mm spheres and ellipsoids in CT-like volumes): FROC, CPM.

The volumes are made in code (:func:`make_volume`): 1 mm isotropic CT in Hounsfield units; lung parenchyma
(-850 HU, gravity gradient, coarse and fine texture), 4-8 curved tapering vessels of soft-tissue density (their
cross-sections and crossings are the usual false positives), solid nodules (-50..+60 HU, textured) whose
diameters are log-uniform in 3-30 mm, half of them ellipsoids, with a partial-volume edge, and 25 HU noise. A
fifth of the volumes hold no nodule. The boxes are the ellipsoids' exact extents. The training and validation
volumes come from ``--seed``, the held-out test volumes from a second generator (``seed + 1``). Training uses
``deepmia.tasks.detect.train`` with a wall-clock budget; the test volumes are predicted by the model
directory's Predictor (with its TTA choice) and scored by the LUNA16 FROC (hit: IoU >= 0.1) and CPM with a
bootstrap interval over volumes, plus, at the operating point of 1 false positive per volume, the sensitivity
per nodule size and what the false positives lie on (vessel, a nodule missed by IoU < 0.1, parenchyma).

Usage:
    flock /tmp/deepmia_cpu.lock python benchmarks/detection_nodules3d.py --time-budget 1200 [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
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


def _field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, std: float) -> np.ndarray:
    """Smooth Gaussian random field of the given correlation length (voxels) and standard deviation."""
    f = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma)
    return f * (std / max(float(f.std()), 1e-9))


def make_volume(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """One CT-like volume (HU, 1 mm voxels), its nodule boxes (voxel-edge corners) and its vessel mask.

    Parenchyma: -850 HU with a gravity-dependent gradient (up to +60 HU across the volume), coarse (8 mm,
    25 HU) and fine (2 mm, 35 HU) texture. Vessels: 4-8 curved tubes (quadratic Bezier curves, 1.5-5 mm
    across) at soft-tissue density, tapering and crossing; their cross-sections and crossings look like small
    nodules. Nodules: solid (-50..+60 HU, with internal texture), diameters log-uniform in 3-30 mm, half of them
    ellipsoids, partial-volume edge. Scanner noise 25 HU.
    """
    shape = (size,) * 3
    grid = np.indices(shape, dtype=np.float32)
    vol = (-850 + rng.uniform(0, 60) * (grid[1] / size - 0.5) + _field(rng, shape, 8, 25)
           + _field(rng, shape, 2, 35))
    vessels = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(4, 9))):
        a, c, b = (rng.uniform(0, size, 3) for _ in range(3))
        t = np.linspace(0, 1, 6 * size)[:, None]
        pts = ((1 - t) ** 2 * a + 2 * t * (1 - t) * c + t**2 * b).round().astype(int).clip(0, size - 1)
        line = np.zeros(shape, np.float32)
        line[pts[:, 0], pts[:, 1], pts[:, 2]] = 1
        tube = ndimage.gaussian_filter(line, rng.uniform(0.6, 2.0))
        vessels = np.maximum(vessels, tube / max(float(tube.max()), 1e-6))
    vessels = np.clip(vessels * 1.3, 0, 1)  # flat-topped profile: a tube of soft-tissue density
    vol += 900 * vessels
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
        density = rng.uniform(-50, 60) + _field(rng, shape, 1.5, 20)
        vol = vol * (1 - mask) + density * mask
        boxes.append({"label": "nodule", "box": [*(centre - semi).tolist(), *(centre + semi).tolist()],
                      "diameter_mm": diameter})
    vol += rng.normal(0, 25, vol.shape)
    return vol.astype(np.float32), boxes, vessels >= 0.5


def make_dataset(root: Path, *, volumes: int, test_volumes: int, size: int, seed: int
                 ) -> tuple[Dataset, dict[str, float], dict[str, np.ndarray]]:
    """The dataset folder, each nodule's diameter by ``case/index`` and the test volumes' vessel masks.

    ``volumes`` from ``seed`` are split 80% train / 20% validation; the ``test_volumes`` held-out volumes come
    from a different generator (``seed + 1``), so no test volume shares random draws with the training ones.
    """
    (root / "images").mkdir(parents=True)
    cases, diameters, vessels = [], {}, {}
    streams = (("vol", volumes, np.random.default_rng(seed)), ("test", test_volumes, np.random.default_rng(seed + 1)))
    for prefix, count, rng in streams:
        for i in range(count):
            cid = f"{prefix}{i:03d}"
            vol, boxes, vessel_mask = make_volume(rng, size)
            if prefix == "test":
                vessels[cid] = vessel_mask
            write_image(Image(vol[None], np.eye(4)), root / "images" / f"{cid}.nii.gz")
            for k, b in enumerate(boxes):
                diameters[f"{cid}/{k}"] = b.pop("diameter_mm")
            cases.append({"id": cid, "patient_id": cid, "images": [f"images/{cid}.nii.gz"], "boxes": boxes,
                          "shape": [size] * 3})
    ids = [c["id"] for c in cases]
    n_tr = int(0.8 * volumes)
    ds = Dataset.create(root, name="synthetic-nodules", task="detection", channels=[{"name": "CT", "modality": "CT"}],
                        labels=["nodule"], cases=cases, license="generated in code (no license needed)",
                        splits={"folds": [{"train": ids[:n_tr], "val": ids[n_tr:volumes]}], "test": ids[volumes:]})
    ds.save()
    return ds, diameters, vessels


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


def false_positive_types(preds: dict, refs: dict, vessels: dict[str, np.ndarray], threshold: float
                         ) -> dict[str, int]:
    """What the false positives scoring at least ``threshold`` lie on.

    ``nodule, IoU < 0.1``: the box overlaps a nodule but too little to hit it (a badly placed or sized box);
    ``vessel``: its centre voxel is inside a vessel; ``parenchyma``: neither (texture and noise).
    """
    types = {"vessel": 0, "nodule, IoU < 0.1": 0, "parenchyma": 0}
    for cid, ref in refs.items():
        p = preds[cid]
        keep = p["scores"] >= threshold
        boxes = p["boxes"][keep]
        iou = box_iou(boxes, ref["boxes"])
        best = iou.max(axis=1) if iou.shape[1] else np.zeros(len(boxes))
        mask = vessels[cid]
        for box, overlap in zip(boxes, best, strict=True):
            if overlap >= 0.1:
                continue
            centre = np.clip(((box[:3] + box[3:]) / 2).astype(int), 0, np.array(mask.shape) - 1)
            kind = "nodule, IoU < 0.1" if overlap > 0 else "vessel" if mask[tuple(centre)] else "parenchyma"
            types[kind] += 1
    return types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data",
                        help="shared data root (unused: the volumes are generated)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "deepmia-nodules3d",
                        help="folder for the generated dataset and the model (re-used when present)")
    parser.add_argument("--volumes", type=int, default=250, help="training + validation volumes (80/20)")
    parser.add_argument("--test-volumes", type=int, default=60, help="held-out volumes (generated with seed + 1)")
    parser.add_argument("--size", type=int, default=64, help="volume edge in voxels (1 mm)")
    parser.add_argument("--time-budget", type=float, default=1200.0, help="training seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="plan override key=value")
    args = parser.parse_args()
    start = time.perf_counter()
    data_dir, model_dir = args.work / "data", args.work / "model"
    if (data_dir / "dataset.json").exists():
        ds = Dataset.load(data_dir)
        diameters = json.loads((args.work / "diameters.json").read_text())
        with np.load(args.work / "vessels.npz") as f:
            vessels = {k: np.unpackbits(f[k])[:args.size**3].reshape((args.size,) * 3).astype(bool) for k in f.files}
    else:
        ds, diameters, vessels = make_dataset(data_dir, volumes=args.volumes, test_volumes=args.test_volumes,
                                              size=args.size, seed=args.seed)
        (args.work / "diameters.json").write_text(json.dumps(diameters))
        np.savez_compressed(args.work / "vessels.npz", **{k: np.packbits(v) for k, v in vessels.items()})
    generate_s = time.perf_counter() - start
    t = time.perf_counter()
    metrics = train(ds.root, model_dir, time_budget_s=args.time_budget, overrides=args.set, progress=print)
    train_s = time.perf_counter() - t
    predictor = Predictor(model_dir)
    plan = predictor.plan
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
    fold = ds.splits.folds[0]
    out = {
        "benchmark": "detection_nodules3d",
        "data": f"synthetic CT volumes {args.size}^3 at 1 mm: {len(fold.train)} train + {len(fold.val)} validation "
                f"(seed {args.seed}), {len(ds.splits.test)} held-out test volumes (seed {args.seed + 1}) with "
                f"{froc['n_gt']} nodules",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average_at_end": os.getloadavg()},
        "command": "python benchmarks/detection_nodules3d.py " + " ".join(sys.argv[1:]),
        "plan": {"input_size": plan.input_size, "scale": plan.scale, "anchors": plan.anchors.base_shapes,
                 "feature_map_scales": plan.anchors.feature_map_scales, "precision": plan.schedule.precision,
                 "threads": plan.schedule.threads, "tta": plan.inference.tta,
                 "wbf_iou": plan.inference.wbf_iou if plan.inference.tta else None},
        "generate_seconds": round(generate_s, 1),
        "train_seconds": round(train_s, 1),
        "epochs": metrics["training"]["epochs"],
        "best_epoch": metrics["training"]["best_epoch"],
        "validation": {"cpm": metrics["validation"]["froc"]["cpm"], "map50": metrics["validation"]["coco"]["map50"]},
        "test": {"cpm": froc["cpm"], "cpm_ci": froc.get("cpm_ci"),
                 "sensitivity_at": dict(zip(map(str, froc["fp_rates"]), froc["sensitivity"], strict=True)),
                 "map50": result["coco"]["map50"], "map": result["coco"]["map"],
                 "threshold_at_1fp": threshold,
                 "sensitivity_by_size_at_1fp": sensitivity_by_size(preds, refs, diameters, threshold),
                 "false_positives_at_1fp": false_positive_types(preds, refs, vessels, threshold)},
        "predict_seconds_per_volume": round(predict_s, 2),
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "detection_nodules3d.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    (HERE / "results" / "detection_nodules3d.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    """The results as a markdown snippet."""
    test = out["test"]
    ci = test.get("cpm_ci") or {}
    froc = " | ".join(f"{float(r):g}" for r in test["sensitivity_at"])
    sens = " | ".join(f"{v:.3f}" for v in test["sensitivity_at"].values())
    sizes = "\n".join(f"| {k} | {v['n']} | {v['sensitivity']:.3f} |" if v["sensitivity"] is not None else
                      f"| {k} | 0 | - |" for k, v in test["sensitivity_by_size_at_1fp"].items())
    fps = ", ".join(f"{k} {v}" for k, v in test["false_positives_at_1fp"].items())
    p = out["plan"]
    return (f"### 3D detection: synthetic nodules\n\n{out['data']}. RetinaNet (input {p['input_size']}, "
            f"{p['precision']}, {p['threads']} thread(s)) trained {out['train_seconds'] / 60:.1f} min on a 2-core CPU "
            f"({out['epochs']} epochs, best {out['best_epoch']}); TTA {'on' if p['tta'] else 'off'}. "
            f"Whole run {out['total_seconds'] / 60:.1f} min.\n\n"
            f"| metric (test) | value |\n|---|---|\n"
            f"| CPM (FROC, IoU >= 0.1) [95% CI] | {test['cpm']:.3f} [{ci.get('low', float('nan')):.3f}, "
            f"{ci.get('high', float('nan')):.3f}] |\n| mAP@0.5 | {test['map50']:.3f} |\n"
            f"| mAP@[.5:.95] | {test['map']:.3f} |\n| prediction | {out['predict_seconds_per_volume']:.2f} s/volume |"
            f"\n\n| FP/volume | {froc} |\n|---|{'---|' * len(test['sensitivity_at'])}\n| sensitivity | {sens} |\n\n"
            f"| nodule size | n | sensitivity at 1 FP/volume |\n|---|---|---|\n{sizes}\n\n"
            f"False positives at 1 FP/volume lie on: {fps}.\n")


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
