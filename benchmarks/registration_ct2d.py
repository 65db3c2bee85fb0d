"""Benchmark: the ITKElastix 2D CT head pair: mutual information and head-mask Dice before and after registration.

Each method runs through the registration Predictor (the code behind ``deepmia register``); MI is measured on
intensities normalised to [0, 1] (32-bin joint histogram) over the whole fixed grid, Dice on the two head masks
(the moving mask warped with nearest neighbour). Figures (checkerboard, overlay, deformation grid) go to
``benchmarks/results/registration_ct2d_<method>/``.

Usage: python benchmarks/registration_ct2d.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from deepmia.io import read_image
from deepmia.metrics.registration import label_overlap
from deepmia.processing.spatial_transform import SpatialTransform
from deepmia.report.results import result_figures
from deepmia.tasks.register.classical import rescale_intensities, similarity
from deepmia.tasks.register.predict import Predictor

HERE = Path(__file__).resolve().parent
METHODS = {  # name: Predictor options
    "rigid (MI)": {"method": "rigid", "metric": "mi"},
    "affine (MI)": {"method": "affine", "metric": "mi"},
    "B-spline (MI)": {"method": "deformable", "metric": "mi", "deformable": "bspline"},
    "demons (MSE)": {"method": "deformable", "metric": "mse", "deformable": "demons"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    root = args.data / "registration" / "ct2d_head"
    fixed = read_image(root / "CT_2D_head_fixed.mha")
    moving = read_image(root / "CT_2D_head_moving.mha")
    fixed_mask = read_image(root / "CT_2D_head_fixed_mask.mha", kind="label")
    moving_mask = read_image(root / "CT_2D_head_moving_mask.mha", kind="label")
    fixed_n = rescale_intensities(fixed).array[0]

    def scores(transform: SpatialTransform) -> dict:
        warped = transform.apply(rescale_intensities(moving), reference=fixed).array[0]
        wm = transform.apply(moving_mask, reference=fixed).array[0] != 0
        dice = label_overlap(wm.astype("uint8"), (fixed_mask.array[0] != 0).astype("uint8"), spacing=fixed.spacing)
        return {"mi": similarity(fixed_n, warped, "mi"), "mask_dice": dice["mean_dice"]}

    rows = {"before": {**scores(SpatialTransform.identity(2)), "seconds": 0.0}}
    out = HERE / "results"
    for name, options in METHODS.items():
        opts = dict(options)
        method = opts.pop("method")
        start = time.perf_counter()
        result = Predictor(method=method, **opts).predict(
            {"fixed": fixed, "moving": moving, "moving_label": moving_mask})
        seconds = time.perf_counter() - start
        transform = result.transform
        fig_dir = out / f"registration_ct2d_{method}_{opts.get('deformable', opts['metric'])}"
        fig_dir.mkdir(parents=True, exist_ok=True)
        result_figures("", result, fig_dir)
        rows[name] = {**scores(transform), "seconds": seconds, "figures": str(fig_dir.relative_to(HERE))}
        print(name, rows[name])
    result = {
        "data": str(root),
        "machine": f"{platform.machine()}, 2-core CPU (shared)",
        "metric_note": "MI in nats on [0,1]-normalised intensities, 32 bins, whole fixed grid; Dice of head masks",
        "rows": rows,
    }
    (out / "registration_ct2d.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "### Registration: 2D CT head pair (ITKElastix example)",
        "",
        "Data: CT_2D_head fixed/moving (256x256, 1 mm) with head masks. Machine: 2-core CPU shared with other jobs.",
        "",
        "| method | mutual information | head-mask Dice | time (s) |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['mi']:.4f} | {r['mask_dice']:.4f} | {r['seconds']:.1f} |")
    lines += ["", "Figures: `benchmarks/results/registration_ct2d_*/` (checkerboard, overlay, deformation grid).", ""]
    (out / "registration_ct2d.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
