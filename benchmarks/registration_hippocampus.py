"""Benchmark: inter-subject hippocampus pairs: Dice before / affine / classical deformable / learned, folding, speed.

Pairs are drawn from the learned model's held-out test cases (``MODEL_DIR/split.json``), so none was used in
training. Each method includes its whole alignment: classical = SimpleITK moments, rigid and affine, then demons;
learned = moments, then one forward pass (affine head + VoxelMorph). The speed ratio is classical deformable
seconds over learned seconds for the same pair, measured in one run; both methods are called once on the first
pair before timing (warm-up, not counted), and both use the same threads.

Usage:
    deepmia dataset import msd ../shared/data/hippocampus DST --link --labels 0=background,1=anterior,2=posterior
    deepmia train register --dataset DST --out MODEL_DIR
    python benchmarks/registration_hippocampus.py --dataset DST --model MODEL_DIR [--pairs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.processing.spatial_transform import SpatialTransform
from deepmia.tasks.register.classical import RegistrationDivergedError, register_images
from deepmia.tasks.register.evaluate import transform_metrics
from deepmia.tasks.register.learned import LearnedRegistration

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=HERE.parent.parent / "shared" / "data",
        help="shared data root (recorded only; the dataset comes from --dataset)",
    )
    parser.add_argument("--dataset", type=Path, required=True, help="imported hippocampus dataset folder")
    parser.add_argument("--model", type=Path, required=True, help="trained learned-registration model folder")
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    dataset = Dataset.load(args.dataset)
    split = json.loads((args.model / "split.json").read_text())
    test = split["test"]
    learned = LearnedRegistration.load(args.model)
    labels = learned.plan.labels
    import torch

    threads = torch.get_num_threads()
    warm_fixed, warm_moving = dataset.read_image(test[0]), dataset.read_image(test[1])
    learned.register(warm_fixed, warm_moving)
    register_images(warm_fixed, warm_moving, method="deformable", metric="mse", demons_iterations=(60, 40, 20))
    rows = []
    for k in range(min(args.pairs, len(test) - 1)):
        fixed_id, moving_id = test[k], test[k + 1]
        fixed, moving = dataset.read_image(fixed_id), dataset.read_image(moving_id)
        fixed_lab, moving_lab = dataset.read_label(fixed_id, image=fixed), dataset.read_label(moving_id, image=moving)
        row: dict = {"fixed": fixed_id, "moving": moving_id}

        def score(t: SpatialTransform, fixed=fixed, fixed_lab=fixed_lab, moving_lab=moving_lab) -> dict:
            m = transform_metrics(
                t, fixed, fixed_label=fixed_lab, warped_label=t.apply(moving_lab, reference=fixed), labels=labels
            )
            return {
                "dice": m["labels"]["mean_dice"],
                "folding": m["jacobian"]["folding_fraction"],
                "jacobian_std": m["jacobian"]["std"],
            }

        row["before"] = score(SpatialTransform.identity(3))
        runs = {
            "affine": lambda fixed=fixed, moving=moving: register_images(fixed, moving, method="affine", metric="ncc"),
            "demons": lambda fixed=fixed, moving=moving: register_images(
                fixed, moving, method="deformable", metric="mse", demons_iterations=(60, 40, 20)
            ),
            "learned": lambda fixed=fixed, moving=moving: learned.register(fixed, moving),
        }
        for name, run in runs.items():
            start = time.perf_counter()
            try:
                result = run()
            except RegistrationDivergedError as err:  # refused as a result, as the CLI would: reported, not scored
                row[name] = {"diverged": str(err), "seconds": time.perf_counter() - start}
                continue
            seconds = time.perf_counter() - start
            row[name] = {**score(result.transform), "seconds": seconds, "stages": result.stages}
        row["speed_ratio"] = row["demons"]["seconds"] / row["learned"]["seconds"]
        rows.append(row)
        print(json.dumps(row))
    diverged = {m: [f"{r['fixed']}<-{r['moving']}" for r in rows if "diverged" in r[m]] for m in runs}
    all_rows, rows = rows, [r for r in rows if not any("diverged" in r[m] for m in runs)]
    mean = lambda m, key: float(np.mean([r[m][key] for r in rows]))  # noqa: E731
    summary = {
        m: {
            "dice": mean(m, "dice"),
            "dice_std": float(np.std([r[m]["dice"] for r in rows])),
            "mean_folding": mean(m, "folding"),
            "max_folding": float(max(r[m]["folding"] for r in rows)),
        }
        for m in ("before", "affine", "demons", "learned")
    }
    summary["median_speed_ratio"] = float(np.median([r["speed_ratio"] for r in rows]))
    summary["min_speed_ratio"] = float(np.min([r["speed_ratio"] for r in rows]))
    for m in ("affine", "demons", "learned"):
        summary[m]["median_seconds"] = float(np.median([r[m]["seconds"] for r in rows]))
    wins = sum(r["learned"]["dice"] >= r["demons"]["dice"] for r in rows)
    model_metrics = json.loads((args.model / "metrics.json").read_text())
    result = {
        "dataset": str(args.dataset),
        "model": str(args.model),
        "training": model_metrics,
        "machine": f"{platform.machine()}, 2-core CPU (shared), {threads} torch threads",
        "load_average_after": list(os.getloadavg()),
        "diverged": diverged,
        "pairs": all_rows,
        "summary": summary,
    }
    out = HERE / "results"
    (out / "registration_hippocampus.json").write_text(json.dumps(result, indent=1) + "\n")
    s = summary
    plan = learned.plan
    refused = "; ".join(f"{m} {len(v)} ({', '.join(v)})" for m, v in diverged.items() if v) or "none"
    met = [
        s["learned"]["dice"] >= s["demons"]["dice"],
        s["learned"]["max_folding"] < 0.01,
        s["median_speed_ratio"] >= 10,
    ]
    lines = [
        "### Registration: inter-subject hippocampus MRI (MSD Task04)",
        "",
        f"{len(all_rows)} pairs of held-out test cases (never trained on; consecutive ids of the model's test split); "
        f"mean Dice over labels {labels} (anterior, posterior) of the moving label map warped onto the fixed one. "
        f"Learned model: `{plan.network}` (affine head + VoxelMorph U-Net at half resolution, one forward pass "
        f"after a moments initialisation), trained {model_metrics['steps']} steps of {plan.batch_size} pairs "
        f"({model_metrics['train_seconds']:.0f} s, {plan.precision}) on {model_metrics['n_train']} cases with "
        f"LNCC + {plan.smoothness_weight} x bending energy + {plan.dice_weight} x label Dice; inference in "
        f"{plan.inference_precision}. Machine: 2-core CPU ({threads} torch threads; SimpleITK uses its default "
        "threads), shared with other work; times include everything each method does (classical: SimpleITK moments, "
        "rigid, affine, demons and its stage checks; learned: normalisation, moments, forward pass, "
        "the dense transform and its divergence check). Results refused as diverged (metric worse than at the "
        f"start): {refused}; "
        f"the table is over the {len(rows)} pairs where every method returned a result.",
        "",
        "| method | mean Dice (sd) | folding: mean / max | median time per pair (s) |",
        "|---|---|---|---|",
        f"| before | {s['before']['dice']:.3f} ({s['before']['dice_std']:.3f}) | - | - |",
    ]
    for m, name in (
        ("affine", "affine (SimpleITK, NCC)"),
        ("demons", "affine + demons (SimpleITK)"),
        ("learned", "learned: affine head + VoxelMorph"),
    ):
        lines.append(
            f"| {name} | {s[m]['dice']:.3f} ({s[m]['dice_std']:.3f}) | {100 * s[m]['mean_folding']:.3f}% / "
            f"{100 * s[m]['max_folding']:.3f}% | {s[m]['median_seconds']:.3f} |"
        )
    lines += [
        "",
        f"Speed, learned vs classical deformable (same pair, one run): median {s['median_speed_ratio']:.1f}x, "
        f"slowest pair {s['min_speed_ratio']:.1f}x. Learned Dice >= classical on {wins} of {len(rows)} pairs.",
        "",
        f"Targets (issue 7): learned >= classical Dice ({'met' if met[0] else 'NOT met'}), < 1% folding "
        f"({'met' if met[1] else 'NOT met'}), >= 10x faster ({'met' if met[2] else 'NOT met'}).",
        "",
    ]
    (out / "registration_hippocampus.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
