"""Hippocampus volumes a clinician can trust? models/hippocampus volumes vs the reference labels on unseen cases.

Usage:
    python benchmarks/segmentation_volumes.py [--data ../shared/data]

The 52 validation cases of ``models/hippocampus`` (never trained on; they chose the checkpoint) go through the task
contract exactly as ``deepmia predict`` runs them (``load_predictor("hippocampus").predict(image)``); each result's
``measurements()`` volumes (the numbers the SR and the report carry) are compared with the reference label map's
voxel count x voxel volume: mean absolute error in %, ICC(2,1) (two-way random, absolute agreement, single
measurement; Shrout & Fleiss 1979) and Bland-Altman bias with 95% limits of agreement, plus a Bland-Altman plot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def icc_2_1(a: np.ndarray, b: np.ndarray) -> float:
    """ICC(2,1) of two raters ``a`` and ``b`` over the same n subjects (absolute agreement)."""
    x = np.stack([a, b], axis=1).astype(float)
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((x.mean(0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand
    ms_err = (resid**2).sum() / ((n - 1) * (k - 1))
    return float((ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--model", default="hippocampus", help="Model name or directory (default: the shipped one).")
    args = ap.parse_args()
    from deepmia.errors import DeepmiaError
    from deepmia.io import read_image
    from deepmia.tasks import load_predictor

    try:
        predictor = load_predictor(args.model)
    except DeepmiaError as exc:
        ap.error(str(exc))
    if predictor.task != "segment":
        ap.error(f"--model {args.model}: a {predictor.task} model; this compares a hippocampus segmentation model's "
                 "volumes")
    cases = json.loads((predictor.model_dir / "split.json").read_text())["val"]
    names = {int(k): v for k, v in predictor.plan.labels.items() if int(k) != 0}
    model, ref = {n: [] for n in names.values()}, {n: [] for n in names.values()}
    start = time.perf_counter()
    for cid in cases:
        image = read_image(args.data / "hippocampus" / "images" / f"{cid}.nii.gz")
        label = read_image(args.data / "hippocampus" / "labels" / f"{cid}.nii.gz", kind="label").array[0]
        rows = predictor.predict(image).measurements()
        voxel_ml = float(np.prod(image.spacing)) / 1000.0
        for k, name in names.items():
            model[name].append(next(r["value"] for r in rows if r["target"] == name and r["quantity"] == "volume"))
            ref[name].append(int((label == k).sum()) * voxel_ml)
    whole = " + ".join(names.values())  # the whole hippocampus: the split between its parts is a labelling convention
    model[whole], ref[whole] = np.sum(list(model.values()), 0), np.sum(list(ref.values()), 0)
    seconds = time.perf_counter() - start
    out = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data / "hippocampus"), "cases": cases,
           "model": str(predictor.model_dir), "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU, no GPU",
           "seconds": round(seconds, 1), "structures": {}}
    for name in model:
        m, r = np.asarray(model[name]), np.asarray(ref[name])
        diff = m - r
        out["structures"][name] = {
            "reference_ml_mean": round(float(r.mean()), 4), "model_ml_mean": round(float(m.mean()), 4),
            "mean_abs_error_pct": round(float(np.mean(np.abs(diff) / r) * 100), 2),
            "median_abs_error_pct": round(float(np.median(np.abs(diff) / r) * 100), 2),
            "icc_2_1": round(icc_2_1(m, r), 4),
            "bias_ml": round(float(diff.mean()), 4),
            "limits_of_agreement_ml": [round(float(diff.mean() - 1.96 * diff.std(ddof=1)), 4),
                                       round(float(diff.mean() + 1.96 * diff.std(ddof=1)), 4)],
            "model_ml": [round(float(v), 4) for v in m], "reference_ml": [round(float(v), 4) for v in r],
        }
    (HERE / "results" / "segmentation_volumes.json").write_text(json.dumps(out, indent=1) + "\n")
    _plot(model, ref, HERE / "results" / "segmentation_volumes_bland_altman.png")
    shown = args.model if "/" in args.model else f"models/{args.model}"
    md = [f"{shown} on its {len(cases)} validation cases (never trained on), volumes from "
          "`Result.measurements()` (what the SR and the report carry) vs reference voxel count x voxel volume; "
          f"{out['machine']}. The last row sums both parts. Command: `python benchmarks/segmentation_volumes.py`. "
          "Bland-Altman plot: "
          "[segmentation_volumes_bland_altman.png](results/segmentation_volumes_bland_altman.png).", "",
          "| structure | reference mean mL | model mean mL | mean abs. error % | median abs. error % | ICC(2,1) | "
          "bias mL [95% limits] |", "|---|---|---|---|---|---|---|"]
    for name, s in out["structures"].items():
        lo, hi = s["limits_of_agreement_ml"]
        md.append(f"| {name} | {s['reference_ml_mean']:.3f} | {s['model_ml_mean']:.3f} | "
                  f"{s['mean_abs_error_pct']:.2f} | {s['median_abs_error_pct']:.2f} | {s['icc_2_1']:.3f} | "
                  f"{s['bias_ml']:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    (HERE / "results" / "segmentation_volumes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _plot(model: dict, ref: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model), figsize=(5 * len(model), 4), squeeze=False)
    for ax, name in zip(axes[0], model, strict=True):
        m, r = np.asarray(model[name]), np.asarray(ref[name])
        mean, diff = (m + r) / 2, m - r
        bias, sd = diff.mean(), diff.std(ddof=1)
        ax.scatter(mean, diff, s=12)
        for y, style in ((bias, "-"), (bias - 1.96 * sd, "--"), (bias + 1.96 * sd, "--")):
            ax.axhline(y, color="k", linestyle=style, linewidth=1)
        ax.set_title(f"{name}: bias {bias:+.3f} mL, limits {bias - 1.96 * sd:+.3f} / {bias + 1.96 * sd:+.3f}")
        ax.set_xlabel("mean of model and reference volume (mL)")
        ax.set_ylabel("model - reference (mL)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
