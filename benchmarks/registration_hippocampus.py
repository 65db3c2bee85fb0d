"""Benchmark: inter-subject hippocampus pairs: Dice before / affine / classical deformable / learned, folding, speed.

Pairs are drawn from the learned model's held-out test cases (``MODEL_DIR/split.json``), so none was used in
training. Each method includes its affine stage; the speed ratio is classical deformable seconds over learned
seconds for the same pair, measured in one run (also given for the deformable stages alone).

Usage:
    deepmia dataset import msd ../shared/data/hippocampus DST --link --labels 0=background,1=anterior,2=posterior
    deepmia train register --dataset DST --out MODEL_DIR
    python benchmarks/registration_hippocampus.py --dataset DST --model MODEL_DIR [--pairs 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.tasks.register.classical import register_images
from deepmia.tasks.register.evaluate import transform_metrics
from deepmia.tasks.register.learned import LearnedRegistration
from deepmia.tasks.register.transforms import Transform

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
    parser.add_argument("--pairs", type=int, default=10)
    args = parser.parse_args()
    dataset = Dataset.load(args.dataset)
    split = json.loads((args.model / "split.json").read_text())
    test = split["test"]
    learned = LearnedRegistration.load(args.model)
    labels = learned.plan.labels
    rows = []
    for k in range(min(args.pairs, len(test) - 1)):
        fixed_id, moving_id = test[k], test[k + 1]
        fixed, moving = dataset.read_image(fixed_id), dataset.read_image(moving_id)
        fixed_lab, moving_lab = dataset.read_label(fixed_id, image=fixed), dataset.read_label(moving_id, image=moving)
        row: dict = {"fixed": fixed_id, "moving": moving_id}

        def score(t: Transform, fixed=fixed, fixed_lab=fixed_lab, moving_lab=moving_lab) -> dict:
            m = transform_metrics(
                t, fixed, fixed_label=fixed_lab, warped_label=t.apply(moving_lab, reference=fixed), labels=labels
            )
            return {
                "dice": m["labels"]["mean_dice"],
                "folding": m["jacobian"]["folding_fraction"],
                "jacobian_std": m["jacobian"]["std"],
            }

        row["before"] = score(Transform.identity(3))
        runs = {
            "affine": lambda fixed=fixed, moving=moving: register_images(fixed, moving, method="affine", metric="ncc"),
            "demons": lambda fixed=fixed, moving=moving: register_images(
                fixed, moving, method="deformable", metric="mse", demons_iterations=(60, 40, 20)
            ),
            "learned": lambda fixed=fixed, moving=moving: learned.register(fixed, moving),
        }
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - start
            row[name] = {
                **score(result.transform),
                "seconds": seconds,
                "deformable_stage_seconds": result.stages[-1]["seconds"],
            }
        row["speed_ratio"] = row["demons"]["seconds"] / row["learned"]["seconds"]
        row["stage_speed_ratio"] = (
            row["demons"]["deformable_stage_seconds"] / row["learned"]["deformable_stage_seconds"]
        )
        rows.append(row)
        print(json.dumps(row))
    mean = lambda m, key: float(np.mean([r[m][key] for r in rows]))  # noqa: E731
    summary = {
        m: {"dice": mean(m, "dice"), "max_folding": float(max(r[m]["folding"] for r in rows))}
        for m in ("before", "affine", "demons", "learned")
    }
    summary["median_speed_ratio"] = float(np.median([r["speed_ratio"] for r in rows]))
    summary["median_stage_speed_ratio"] = float(np.median([r["stage_speed_ratio"] for r in rows]))
    for m in ("affine", "demons", "learned"):
        summary[m]["median_seconds"] = float(np.median([r[m]["seconds"] for r in rows]))
    model_metrics = json.loads((args.model / "metrics.json").read_text())
    result = {
        "dataset": str(args.dataset),
        "model": str(args.model),
        "training": model_metrics,
        "machine": f"{platform.machine()}, 2-core CPU (shared)",
        "pairs": rows,
        "summary": summary,
    }
    out = HERE / "results"
    (out / "registration_hippocampus.json").write_text(json.dumps(result, indent=1) + "\n")
    s = summary
    lines = [
        "### Registration: inter-subject hippocampus MRI (MSD Task04)",
        "",
        f"{len(rows)} pairs of held-out test cases (never trained on); mean Dice over labels {labels} "
        f"(anterior, posterior). Learned model: VoxelMorph trained {model_metrics['epochs']} epochs "
        f"({model_metrics['seconds']:.0f} s incl. data preparation) on {model_metrics['n_train']} cases. "
        "Machine: 2-core CPU shared with other training jobs.",
        "",
        "| method | mean Dice | max folding | median time per pair (s) |",
        "|---|---|---|---|",
        f"| before | {s['before']['dice']:.3f} | - | - |",
    ]
    for m, name in (
        ("affine", "affine (SimpleITK)"),
        ("demons", "affine + demons"),
        ("learned", "affine + VoxelMorph"),
    ):
        lines.append(
            f"| {name} | {s[m]['dice']:.3f} | {100 * s[m]['max_folding']:.3f}% | {s[m]['median_seconds']:.2f} |"
        )
    lines += [
        "",
        f"Speed, learned vs classical deformable (same pair, one run): {s['median_speed_ratio']:.1f}x end to end "
        f"(both include the affine stage), {s['median_stage_speed_ratio']:.1f}x for the deformable stage alone.",
        "Targets (issue 7): learned >= classical Dice, < 1% folding, >= 10x faster.",
        "",
    ]
    (out / "registration_hippocampus.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
