"""Segmentation inference speed and memory: deepmia's Predictor vs MONAI's SlidingWindowInferer (fp32, eager).

Same weights (models/hippocampus, fold 0), same preprocessing, same window (the plan's patch) and overlap
(0.5), Gaussian blending in both, no mirroring in either. deepmia runs its own slab-streaming sliding window
with the precision chosen at training (bf16 autocast on this CPU); MONAI runs ``SlidingWindowInferer`` in plain
fp32. Each method predicts the 52 validation volumes of fold 0 (split.json) in its own subprocess, so peak
resident memory (ru_maxrss) belongs to that method alone; Dice is against the reference labels. A synthetic
512 x 512 x 300 CT-sized volume (overlap 0 to keep the run short) shows how peak memory scales with volume size.

Usage: python benchmarks/segmentation_inference.py [--data ../shared/data] [--model models/hippocampus]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run_method(method: str, data: Path, model: Path, big: bool) -> dict:
    import torch

    from deepmia.io import read_image
    from deepmia.metrics.segmentation import dice_per_label
    from deepmia.tasks.segment.predict import Predictor
    from deepmia.tasks.segment.preprocess import apply_normalization

    predictor = Predictor(model, folds=[0], tta=False, postprocess=False)
    plan = predictor.plan
    split = json.loads((model / "split.json").read_text())
    net = predictor.models[0]

    def monai_predict(image) -> np.ndarray:
        from monai.inferers import SlidingWindowInferer

        inferer = SlidingWindowInferer(
            roi_size=plan.patch_size,
            sw_batch_size=plan.inference.batch_size,
            overlap=predictor.overlap,
            mode="gaussian",
        )
        x = torch.from_numpy(apply_normalization(image.array, plan))[None]
        with torch.no_grad():
            return inferer(x, net)[0].argmax(0).numpy().astype(np.uint8)

    if big:
        rng = np.random.default_rng(0)
        vol = rng.normal(0, 1, size=(1, 512, 512, 300)).astype(np.float32)
        from deepmia.image import Image

        image = Image(vol, np.eye(4))
        predictor.overlap = 0.0
        t = time.perf_counter()
        if method == "deepmia":
            out = predictor.predict(image).labels.array[0]
        else:
            from monai.inferers import SlidingWindowInferer

            inferer = SlidingWindowInferer(roi_size=plan.patch_size, sw_batch_size=4, overlap=0.0, mode="gaussian")
            with torch.no_grad():
                out = inferer(torch.from_numpy(apply_normalization(vol, plan))[None], net)[0].argmax(0).numpy()
        seconds = time.perf_counter() - t
        return {
            "method": method,
            "volume": "512x512x300",
            "seconds": seconds,
            "shape": list(out.shape),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }

    scores, total = [], 0.0
    for case in split["val"]:
        image = read_image(data / "hippocampus" / "images" / f"{case}.nii.gz")
        ref = read_image(data / "hippocampus" / "labels" / f"{case}.nii.gz", kind="label").array[0]
        t = time.perf_counter()
        pred = predictor.predict(image).labels.array[0] if method == "deepmia" else monai_predict(image)
        total += time.perf_counter() - t
        scores.append(list(dice_per_label(pred, ref, (1, 2), both_empty=1.0).values()))
    s = np.asarray(scores)
    return {
        "method": method,
        "cases": len(scores),
        "seconds": total,
        "cases_per_s": len(scores) / total,
        "dice_anterior": float(s[:, 0].mean()),
        "dice_posterior": float(s[:, 1].mean()),
        "dice_mean": float(s.mean()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "precision": predictor.precision if method == "deepmia" else "fp32",
    }


def write_results(result: dict) -> None:
    """Write ``results/segmentation_inference.json`` and its markdown table."""
    runs, big, speedup = result["runs"], result["big_volume"], result["speedup_deepmia_vs_monai"]
    load_before, load_after = result["load_average_1min"]["before"], result["load_average_1min"]["after"]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "segmentation_inference.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "### Segmentation inference: deepmia Predictor vs MONAI SlidingWindowInferer (fp32)",
        "",
        f"Data: the {runs[0]['cases']} fold-0 validation volumes of hippocampus; model `models/hippocampus` fold 0; "
        "window = plan patch, overlap 0.5, Gaussian blending, no mirroring; each method in its own process; "
        f"machine: {result['machine']}, 1-minute load average {load_before:.1f} before and {load_after:.1f} after "
        "(2 would mean both cores busy with other work). Command: `python benchmarks/segmentation_inference.py`.",
        "",
        "| method | precision | cases/s | seconds | Dice anterior | Dice posterior | mean Dice | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['method']} | {r['precision']} | {r['cases_per_s']:.2f} | {r['seconds']:.1f} | "
            f"{r['dice_anterior']:.4f} | {r['dice_posterior']:.4f} | {r['dice_mean']:.4f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"Speed-up deepmia / MONAI: **{speedup:.2f}x**; mean Dice difference {result['dice_difference']:+.4f}.",
        "",
    ]
    if big:
        if any(b.get("earlier_run") for b in big):
            lines += ["Big volume: from an earlier run of this script (not re-run with `--no-big`).", ""]
        lines += ["| 512x512x300 synthetic volume (overlap 0) | seconds | peak RSS MiB |", "|---|---:|---:|"]
        lines += [f"| {b['method']} | {b['seconds']:.1f} | {b['peak_rss_mib']:.0f} |" for b in big]
        lines.append("")
    (HERE / "results" / "segmentation_inference.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "hippocampus")
    parser.add_argument(
        "--no-big",
        action="store_true",
        help="Skip the 512x512x300 volume (the previous result file's big-volume rows are kept, marked as earlier).",
    )
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "BIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_method(args.worker[0], args.data, args.model, args.worker[1] == "1")))
        return

    def child(method: str, big: bool) -> dict:
        cmd = [
            sys.executable,
            __file__,
            "--data",
            str(args.data),
            "--model",
            str(args.model),
            "--worker",
            method,
            "1" if big else "0",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    load_before = os.getloadavg()[0]
    runs = [child("monai", False), child("deepmia", False)]
    big = [] if args.no_big else [child("deepmia", True), child("monai", True)]
    load_after = os.getloadavg()[0]
    previous = HERE / "results" / "segmentation_inference.json"
    if args.no_big and previous.is_file():
        old = json.loads(previous.read_text())
        big = [{**b, "earlier_run": True} for b in old.get("big_volume", [])]
    speedup = runs[0]["seconds"] / runs[1]["seconds"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU",
        "load_average_1min": {"before": load_before, "after": load_after},
        "model": str(args.model),
        "runs": runs,
        "big_volume": big,
        "speedup_deepmia_vs_monai": speedup,
        "dice_difference": runs[1]["dice_mean"] - runs[0]["dice_mean"],
    }
    write_results(result)


if __name__ == "__main__":
    main()
