"""BUSI breast ultrasound (RGB PNG, 3 classes, names with spaces): deepmia's default classifier vs a plain ResNet-18.

Usage:
    python benchmarks/classify_busi.py [--data ../shared/data] [--work /tmp/busi_bench] [--budget 15m] [--reuse]

The generic commands only, as a new user runs them: ``deepmia dataset import folder`` (the RGB images as they
are; the captions CSV and README are reported as skipped), ``deepmia dataset split`` (the default: 5 folds and a
held-out test set, patient-grouped, stratified), then two trainings with the same budget on the same split:

* deepmia: ``deepmia train classify --time-budget 15m`` (width and ensemble size fitted to the budget, TTA,
  temperature scaling, positive class found from the names: malignant);
* baseline: the same command with ``--set members=1 --set network_params.widths=[64,128,256,512] --set tta=false``,
  a plain ResNet-18 (standard widths, one model, no test-time augmentation);

and ``deepmia evaluate classify --split test`` of each: accuracy, balanced accuracy, macro AUROC with its bootstrap
95% interval, per-class sensitivity. ``--reuse`` evaluates model folders already in ``--work`` instead of training.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from _commands import deepmia, run

HERE = Path(__file__).resolve().parent
BASELINE = ["--set", "members=1", "--set", "network_params.widths=[64,128,256,512]", "--set", "tta=false"]


def _row(name: str, metrics: dict, model: Path, command_seconds: float | None) -> dict:
    auc = metrics["auroc"]["macro"]
    plan = json.loads((model / "plan.json").read_text())
    training = json.loads((model / "metrics.json").read_text())["training"]
    return {
        "model": name, "n_test": metrics["n_cases"], "accuracy": round(metrics["accuracy"], 4),
        "balanced_accuracy": round(metrics["balanced_accuracy"], 4), "macro_auroc": round(auc["auc"], 4),
        "macro_auroc_ci": [round(auc["bootstrap"]["low"], 4), round(auc["bootstrap"]["high"], 4)],
        "sensitivity_per_class": {k: round(v, 4) for k, v in metrics["sensitivity_per_class"].items()},
        "members": plan["members"], "widths": plan["network_params"].get("widths"), "tta": plan["tta"],
        "input_size": plan["input_size"], "channels": plan["channels"], "positive_class": plan.get("positive_class"),
        "training_seconds": training["total_seconds"], "command_seconds": command_seconds,
        "member_epochs": [m["epochs"] for m in training["members"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/busi_bench"))
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--reuse", action="store_true", help="evaluate the model folders already in --work")
    args = ap.parse_args()
    ds, work = args.work / "ds", args.work
    if not (ds / "dataset.json").exists():
        r = run([str(Path(sys.executable).with_name("deepmia")), "dataset", "import", "folder", str(args.data / "busi"),
                 str(ds)])
        if r["rc"] not in (0, 1):  # 1: files beside the class folders (README, captions CSV) reported as skipped
            sys.exit(r["output"])
        deepmia("dataset", "split", str(ds))
    rows = []
    for name, extra in (("deepmia", []), ("resnet18_baseline", BASELINE)):
        model = work / name
        seconds = None
        if not (args.reuse and (model / "calibration.json").exists()):
            seconds, _ = deepmia("train", "classify", "--dataset", str(ds), "--out", str(model), "--time-budget",
                                 args.budget, *extra, log=work / f"{name}.log")
        _, out = deepmia("evaluate", "classify", str(model), "--dataset", str(ds),
                         "--out", str(work / f"eval_{name}"), "--split", "test", "--json")
        rows.append(_row(name, json.loads(out), model, seconds))
        print(rows[-1], flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "data": str(args.data / "busi"), "budget": args.budget,
              "split": "deepmia dataset split default (5 folds)",
              "machine": f"{platform.machine()}, 2-core CPU, no GPU (shared with other jobs)", "rows": rows}
    (HERE / "results" / "classify_busi.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [f"BUSI (780 RGB PNGs: benign / malignant / normal), `deepmia dataset split` default, {rows[0]['n_test']} "
          f"held-out test images scored once; {args.budget} budget per training on {result['machine']}. Command: "
          "`python benchmarks/classify_busi.py` (both models trained with `deepmia train classify`, the baseline with "
          f"`{' '.join(BASELINE)}`). Intervals: bootstrap over test cases.", "",
          "| model | members x widths, TTA | test n | accuracy | balanced acc. | macro AUROC [95% CI] | "
          "sensitivity benign / malignant / normal | training s (members) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["sensitivity_per_class"]
        md.append(f"| {r['model']} | {r['members']} x {r['widths']}, {r['tta']} | {r['n_test']} | "
                  f"{r['accuracy']:.3f} | "
                  f"{r['balanced_accuracy']:.3f} | {r['macro_auroc']:.3f} [{r['macro_auroc_ci'][0]:.3f}, "
                  f"{r['macro_auroc_ci'][1]:.3f}] | {s['benign']:.3f} / {s['malignant']:.3f} / {s['normal']:.3f} | "
                  f"{r['training_seconds']:.0f} |")
    (HERE / "results" / "classify_busi.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
