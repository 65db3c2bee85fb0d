"""Retinal vessel segmentation on DRIVE with the generic commands: import -> train -> predict -> evaluate.

Every step is a ``deepmia`` command, the same ones a hippocampus run uses; nothing here knows DRIVE except the
import patterns (where the files are and that labels are stored as 0/255):

1. ``deepmia dataset import pairs`` with the official split: the 20 training images (21-40) get 5 folds, the
   20 test images (01-20) are held out (``splits.test``, ``imagesTs/``), each with its field-of-view mask.
2. ``deepmia train segment --time-budget 45m`` (fold 0: 16 training, 4 validation images), 2D plan chosen from
   the fingerprint. Re-running resumes from the last checkpoint.
3. ``deepmia predict MODEL imagesTs OUT --probabilities`` (mirroring TTA).
4. ``deepmia evaluate segment OUT labelsTs --mask-dir masksTs --prob-dir OUT/probabilities``: F1 (= Dice) and
   pixel AUC inside the field of view, pooled over all pixels of the 20 test images (the convention of the
   DRIVE literature) and per image, with bootstrap 95% intervals over images. The second human observer
   (``testing/2nd_manual``) is scored the same way as a reference point.

Targets (issue 4): pooled F1 in FOV >= 0.81 and pixel AUC >= 0.975, with at most 45 minutes of training.
A run with a shorter budget is a smoke test: it works in its own folder and its results go to
``WORK/results/segmentation_drive_smoke.*``, never to ``benchmarks/results``. Training resumes from the work
folder's last checkpoint, so start a new measurement with ``--fresh`` (or a new ``--work``).

Usage: python benchmarks/segmentation_drive.py [--data ../shared/data] [--time-budget 45m] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
from _commands import deepmia  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FULL_BUDGET_S = 45 * 60
TARGETS = {"f1": 0.81, "auc": 0.975}
PATTERNS = [
    "image=training/images/{id}_training.tif",
    "label=training/1st_manual/{id}_manual1.gif",
    "roi=training/mask/{id}_training_mask.gif",
    "test_image=testing/images/{id}_test.tif",
    "test_label=testing/1st_manual/{id}_manual1.gif",
    "test_roi=testing/mask/{id}_test_mask.gif",
]


def second_observer(drive: Path, out: Path) -> Path:
    """The second observer's test annotations as label maps named by case id (0/1), for the same evaluation.

    These GIFs use a near-grey palette ((2, 2, 4) and (252, 254, 254) style colours), so they read as RGB;
    a vessel is a bright pixel.
    """
    from deepmia.image import Image
    from deepmia.io import read_image, write_image

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((drive / "testing/2nd_manual").glob("*_manual2.gif")):
        case_id = path.name.split("_")[0]
        manual = read_image(path)
        image = read_image(drive / f"testing/images/{case_id}_test.tif")
        vessel = (manual.array.mean(axis=0, keepdims=True) > 127).astype(np.uint8)
        write_image(Image(vessel, image.affine, kind="label"), out / f"{case_id}.png")
    return out


def _ci(entry: dict, key: str = "value") -> dict:
    return {"value": entry[key], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"]}


def scores(summary: dict) -> dict:
    """The headline numbers of an ``evaluate segment --json`` summary (class ``vessel``)."""
    pooled = summary["pooled"]["vessel"]
    per_image = summary["per_class"]["vessel"]
    out = {
        "n_images": summary["n_cases"],
        "pooled": {m: _ci(v) for m, v in pooled.items() if m != "n_cases"},
        "per_image_mean": {"f1": _ci(per_image["dice"], "mean")},
    }
    if "auc" in per_image:
        out["per_image_mean"]["auc"] = _ci(per_image["auc"], "mean")
    return out


def fmt(entry: dict | None, digits: int = 4) -> str:
    if entry is None:
        return "-"
    return f"{entry['value']:.{digits}f} [{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"


def markdown(result: dict, smoke: bool) -> str:
    model, human = result["model"], result.get("second_observer")
    train = result["training"]
    title = "Segmentation, DRIVE retinal vessels" + (" (SMOKE RUN: shortened budget, not a result)" if smoke else "")
    rows = [("deepmia (fold 0)", model)] + ([("second human observer", human)] if human else [])
    lines = [
        f"### {title}",
        "",
        "Data: DRIVE, official split: trained on 16 of the 20 training images (fold 0; 4 validate), scored on the "
        "20 test images against the 1st manual, inside each image's field-of-view mask. Pooled = all FOV pixels "
        "of the 20 images together (the DRIVE literature's convention); per image = mean over images. "
        "95% intervals: bootstrap over images. Machine: 2-core CPU, no GPU.",
        "Command: `python benchmarks/segmentation_drive.py --time-budget "
        + result["time_budget"] + "".join(f" --set {o}" for o in result.get("plan_overrides", [])) + "`.",
        "",
        "| method | F1 pooled | AUC pooled | F1 per image | AUC per image | sensitivity | specificity | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        p, m = s["pooled"], s["per_image_mean"]
        lines.append(
            f"| {name} | {fmt(p['dice'])} | {fmt(p.get('auc'))} | {fmt(m['f1'])} | {fmt(m.get('auc'))} | "
            f"{p['sensitivity']['value']:.4f} | {p['specificity']['value']:.4f} | {p['accuracy']['value']:.4f} |"
        )
    met = result["targets_met"]
    lines += [
        "",
        f"Targets: F1 >= {TARGETS['f1']} ({'met' if met['f1'] else 'not met'}), AUC >= {TARGETS['auc']} "
        f"({'met' if met['auc'] else 'not met'}).",
        f"Training: {train.get('minutes')} min, {train.get('epochs')} epochs, {train.get('steps')} steps, precision "
        f"{train.get('precision')}, best validation Dice (network grid) {train.get('best_val_dice_network_grid')}; "
        f"plan: {result['plan']['spatial_dims']}D, patch {result['plan']['patch_size']}, batch "
        f"{result['plan']['batch_size']}, {result['plan']['in_channels']} input channels. "
        f"Wall time: import {result['seconds']['import']:.0f} s, train {result['seconds']['train']:.0f} s, "
        f"predict {result['seconds']['predict']:.0f} s, evaluate {result['seconds']['evaluate']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--time-budget", default="45m", help="Training budget (45m; shorter = a smoke run).")
    parser.add_argument("--work", type=Path, default=None,
                        help="Dataset, cache, model, predictions (default out/segmentation_drive, or "
                        "out/segmentation_drive_smoke for a shortened budget; git-ignored).")
    parser.add_argument("--model", type=Path, default=None, help="Model directory (default WORK/model).")
    parser.add_argument("--fresh", action="store_true", help="Delete WORK first (else steps resume / are reused).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Plan override passed to train segment (repeatable); recorded in the results.")
    args = parser.parse_args()

    from deepmia.cli._common import parse_duration

    budget_s = parse_duration(args.time_budget) or FULL_BUDGET_S
    smoke = budget_s < FULL_BUDGET_S
    drive = args.data / "drive"
    work = args.work or REPO / "out" / ("segmentation_drive_smoke" if smoke else "segmentation_drive")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or work / "model"
    dataset = work / "dataset"
    seconds: dict[str, float] = {}

    if not (dataset / "dataset.json").exists():
        pattern_args = [a for p in PATTERNS for a in ("--pattern", p)]
        seconds["import"], _ = deepmia(
            "dataset", "import", "pairs", str(drive), str(dataset), "--name", "drive", "--labels",
            "0=background,1=vessel", "--value-map", "255=1", "--channel", "RGB:OP", *pattern_args,
        )
    else:
        seconds["import"] = 0.0
    seconds["train"], _ = deepmia(
        "train", "segment", "--dataset", str(dataset), "--out", str(model), "--time-budget", args.time_budget,
        "--cache", str(work / "cache"), *(a for o in args.overrides for a in ("--set", o)), log=work / "train.log",
    )
    pred = work / "pred"
    if pred.exists():
        shutil.rmtree(pred)
    seconds["predict"], _ = deepmia("predict", str(model), str(dataset / "imagesTs"), str(pred), "--probabilities")
    common = ["--mask-dir", str(dataset / "masksTs"), "--labels", "1=vessel", "--json"]
    seconds["evaluate"], out = deepmia(
        "evaluate", "segment", str(pred), str(dataset / "labelsTs"), "--prob-dir", str(pred / "probabilities"),
        "--out", str(work / "eval"), *common,
    )
    model_scores = scores(json.loads(out))
    _, out = deepmia("evaluate", "segment", str(second_observer(drive, work / "second_observer")),
                     str(dataset / "labelsTs"), *common)
    human_scores = scores(json.loads(out))

    plan = json.loads((model / "plan.json").read_text())
    metrics = json.loads((model / "fold_0" / "metrics.json").read_text())
    training = {k: v for k, v in metrics.get("training", {}).items() if k != "machine"}
    pooled = model_scores["pooled"]
    result = {
        "benchmark": "segmentation_drive",
        "smoke": smoke,
        "time_budget": args.time_budget,
        "plan_overrides": args.overrides,
        "data": str(drive),
        "split": "official: train 21-40 (fold 0: 16 train / 4 val), test 01-20 (1st manual), inside the FOV masks",
        "model": model_scores,
        "second_observer": human_scores,
        "targets": TARGETS,
        "targets_met": {
            "f1": pooled["dice"]["value"] >= TARGETS["f1"], "auc": pooled["auc"]["value"] >= TARGETS["auc"]
        },
        "training": training,
        "validation_fold0": {"dice": metrics["mean"]["dice"]["mean"]},
        "plan": {
            "spatial_dims": plan["spatial_dims"],
            "patch_size": plan["patch_size"],
            "batch_size": plan["batch_size"],
            "in_channels": len(plan["channels"]),
            "normalization": [n["scheme"] for n in plan["normalization"]],
            "filters": plan["network_params"]["filters"],
        },
        "seconds": seconds,
        "machine": {"cpu_cores": os.cpu_count(), "gpu": None, "python": platform.python_version()},
    }
    results_dir = work / "results" if smoke else HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    name = "segmentation_drive_smoke" if smoke else "segmentation_drive"
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"{name}.md").write_text(markdown(result, smoke))
    print(markdown(result, smoke))
    print(f"wrote {results_dir / name}.json and .md")


if __name__ == "__main__":
    main()
