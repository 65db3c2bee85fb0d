"""Segmentation and registration metrics on real label maps: agreement with MONAI and speed.

Data: the hippocampus label maps (../shared/data/hippocampus/labels, anisotropy from their NIfTI headers) and
the FreeSurfer aseg of the VoxelMorph brain (../shared/data/registration/brain_t1, 30 evaluation labels).
"Predictions" are the reference label maps moved by a known smooth random deformation (nearest-neighbour
warp), so every structure has real anatomy and a non-trivial boundary error. For each case both
deepmia.metrics.segmentation_metrics (Dice, IoU, HD95, ASSD, NSD@1mm in one call) and MONAI's
compute_hausdorff_distance(percentile=95) + compute_average_surface_distance + compute_surface_dice (the three
calls a user needs for the same numbers) run on the same arrays; the table reports total time and the largest
absolute difference between the two. The brain deformation's Jacobian statistics and inverse consistency are
timed too.

Usage: python benchmarks/metrics_segmentation.py [--data ../shared/data] [--cases 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], amplitude: float, sigma: float) -> np.ndarray:
    """Random smooth displacement in voxels, (D, *shape), max magnitude about ``amplitude``."""
    field = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), sigma) for _ in shape])
    return field * (amplitude / np.abs(field).max())


def warp_labels(labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    coords = np.indices(labels.shape, dtype=np.float32) + field
    return ndimage.map_coordinates(labels, coords, order=0, mode="nearest")


def monai_metrics(pred: np.ndarray, ref: np.ndarray, labels: list[int], spacing, tol: float) -> np.ndarray:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    p = torch.as_tensor(np.stack([pred == k for k in [0, *labels]])[None])
    g = torch.as_tensor(np.stack([ref == k for k in [0, *labels]])[None])
    sp = [float(s) for s in spacing]
    hd = compute_hausdorff_distance(p, g, percentile=95, spacing=sp)[0].numpy()
    asd = compute_average_surface_distance(p, g, symmetric=True, spacing=sp)[0].numpy()
    nsd = compute_surface_dice(p, g, class_thresholds=[tol] * len(labels), spacing=sp)[0].numpy()
    return np.stack([hd, asd, nsd], axis=1)


def ours(pred, ref, labels, spacing, tol):
    from deepmia.metrics import segmentation_metrics

    scores = segmentation_metrics(pred, ref, spacing=spacing, labels=labels, tolerance_mm=tol)
    return np.array([[scores[k].hd95, scores[k].assd, scores[k].nsd] for k in labels])


def compare(cases, tol: float = 1.0) -> dict:
    t_ours = t_monai = 0.0
    worst = 0.0
    for pred, ref, labels, spacing in cases:
        t0 = time.perf_counter()
        a = ours(pred, ref, labels, spacing, tol)
        t1 = time.perf_counter()
        b = monai_metrics(pred, ref, labels, spacing, tol)
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_monai += t2 - t1
        finite = np.isfinite(a) & np.isfinite(b)
        worst = max(worst, float(np.abs(a[finite] - b[finite]).max()) if finite.any() else 0.0)
    return {"cases": len(cases), "deepmia_s": t_ours, "monai_s": t_monai, "max_abs_diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--cases", type=int, default=60, help="hippocampus cases to use")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from deepmia.io import read_image
    from deepmia.metrics import inverse_consistency_error, jacobian_statistics

    rng = np.random.default_rng(0)
    rows = []
    hippo = []
    for path in sorted((args.data / "hippocampus" / "labels").glob("*.nii.gz"))[: args.cases]:
        img = read_image(path)
        ref = img.array[0].astype(np.uint8)
        pred = warp_labels(ref, smooth_field(rng, ref.shape, 1.5, 4.0))
        hippo.append((pred, ref, [1, 2], img.spacing))
    rows.append({"data": f"hippocampus labels ({len(hippo)} cases, 2 classes)", **compare(hippo)})

    scan = np.load(args.data / "registration" / "brain_t1" / "test_scan.npz")
    seg = scan["seg"].astype(np.int16)
    labels = [int(v) for v in np.load(args.data / "registration" / "brain_t1" / "labels.npz")["labels"]]
    field = smooth_field(rng, seg.shape, 3.0, 8.0)
    brain = [(warp_labels(seg, field), seg, labels, (1.0, 1.0, 1.0))]
    rows.append({"data": "brain aseg 160x192x224 (1 case, 30 labels)", **compare(brain)})

    t0 = time.perf_counter()
    jac = jacobian_statistics(field, spacing=(1.0, 1.0, 1.0), units="voxel")
    t_jac = time.perf_counter() - t0
    t0 = time.perf_counter()
    ice = inverse_consistency_error(field, -field, spacing=(1.0, 1.0, 1.0), units="voxel")
    t_ice = time.perf_counter() - t0
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU (shared), torch threads 1",
        "segmentation": rows,
        "brain_field": {
            "jacobian_s": t_jac,
            "folding_fraction": jac["folding_fraction"],
            "jacobian_std": jac["std"],
            "inverse_consistency_s": t_ice,
            "ice_mean_mm_negated_field": ice["mean"],
        },
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "metrics_segmentation.json").write_text(json.dumps(result, indent=2))
    lines = [
        "| data | cases | deepmia (s) | MONAI (s) | MONAI/deepmia | max abs diff (HD95, ASSD mm; NSD) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['cases']} | {r['deepmia_s']:.2f} | {r['monai_s']:.2f} | "
            f"{r['monai_s'] / r['deepmia_s']:.1f} | {r['max_abs_diff']:.2g} |"
        )
    bf = result["brain_field"]
    lines.append("")
    lines.append(
        f"Brain 160x192x224 deformation field: Jacobian statistics {bf['jacobian_s']:.2f} s "
        f"(folding {bf['folding_fraction']:.4f}), inverse consistency {bf['inverse_consistency_s']:.2f} s. "
        f"Machine: {result['machine']}. deepmia = one segmentation_metrics call (Dice, IoU, HD95, ASSD, NSD); "
        "MONAI = compute_hausdorff_distance + compute_average_surface_distance + compute_surface_dice. "
        "Command: `python benchmarks/metrics_segmentation.py`."
    )
    (out / "metrics_segmentation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
