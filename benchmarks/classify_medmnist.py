"""Classification on PneumoniaMNIST and AdrenalMNIST3D: test metrics, ECE before/after temperature scaling.

Usage:
    python benchmarks/classify_medmnist.py [--data ../shared/data] [--train] [--budget 15m]

With ``--train`` each model is (re)trained by ``deepmia train classify --dataset DIR --out models/<name>
--time-budget 15m`` (the same command, no dataset-specific code); without it the shipped models are evaluated.
Either way the official test split is scored once with ``deepmia evaluate classify --record`` (accuracy, AUROC
with DeLong and bootstrap 95% CIs, ECE before and after temperature scaling) and the explanation sanity checks
run on real test images (Adebayo's weight randomisation; deletion of the Grad-CAM peak vs a random box).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"pneumoniamnist": "pneumoniamnist.npz", "adrenalmnist3d": "adrenalmnist3d.npz"}
TARGETS = {"pneumoniamnist": {"accuracy": 0.91, "auroc": 0.97}, "adrenalmnist3d": {"accuracy": 0.80, "auroc": 0.86}}


def deepmia(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "deepmia"), *args], check=True, cwd=REPO)


def sanity(model_dir: Path, dataset_dir: Path, n: int = 16) -> dict[str, object]:
    """Explanation sanity checks on the first ``n`` positive test cases."""
    from deepmia.data.dataset import Dataset
    from deepmia.explain.saliency import occlusion_drop, randomization_similarity, saliency_map, target_layer
    from deepmia.nn import build_network
    from deepmia.tasks.classify.data import load_cases
    from deepmia.tasks.classify.predict import Predictor

    p = Predictor(model_dir)
    ds = Dataset.load(dataset_dir)
    ids = [c for c in ds.splits.test if ds.case(c).classes == [1]][:n]
    x = torch.from_numpy(load_cases(ds, ids, p.plan))
    model = p.models[0]
    rand = build_network(p.plan.network, spatial_dims=p.plan.spatial_dims, in_channels=1, out_channels=2,
                         **p.plan.network_params).eval()
    layer = target_layer(model, x[:1])
    sims = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        m = saliency_map(model, xi, method="gradcam", class_index=1, layer=layer)
        sims.append(randomization_similarity(m, saliency_map(rand, xi, method="gradcam", class_index=1, layer=layer)))
    out: dict[str, object] = {"cases": len(x), "layer": layer,
                              "spearman_trained_vs_random_weights": float(np.mean(sims))}
    for method in ("gradcam", "gradcampp", "occlusion"):
        rng = np.random.default_rng(0)
        peak, other = [], []
        for i in range(len(x)):
            m = saliency_map(model, x[i:i + 1], method=method, class_index=1, layer=layer)
            for _ in range(3):
                a, b = occlusion_drop(model, x[i:i + 1], m, class_index=1, fraction=0.15, rng=rng)
                peak.append(a)
                other.append(b)
        out[f"prob_drop_{method}_peak_vs_random"] = [float(np.mean(peak)), float(np.mean(other))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--train", action="store_true", help="retrain the models (15 min each)")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--only", choices=sorted(DATASETS), default=None)
    args = ap.parse_args()
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads "
        "(shared with other jobs)", "torch": torch.__version__,
    }
    work = Path(tempfile.mkdtemp(prefix="deepmia_cls_"))
    for name, file in DATASETS.items():
        if args.only and name != args.only:
            continue
        ds_dir = work / name
        deepmia("dataset", "import", "medmnist", str(args.data / "medmnist" / file), str(ds_dir))
        model_dir = REPO / "models" / name
        if args.train:
            deepmia("train", "classify", "--dataset", str(ds_dir), "--out", str(model_dir),
                    "--time-budget", args.budget)
        deepmia("evaluate", "classify", str(model_dir), "--dataset", str(ds_dir), "--out", str(work / f"{name}_eval"),
                "--sensitivity", "0.9", "--record")
        m = json.loads((work / f"{name}_eval" / "metrics.json").read_text())
        stored = json.loads((model_dir / "metrics.json").read_text())
        plan = json.loads((model_dir / "plan.json").read_text())
        auroc = m["auroc"]["per_class"][plan["class_names"][1]]
        results[name] = {
            "test_cases": m["n_cases"], "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
            "auroc": auroc["auc"], "auroc_delong_ci": [auroc["delong"]["ci_low"], auroc["delong"]["ci_high"]],
            "sensitivity": m["operating_point"]["sensitivity"], "specificity": m["operating_point"]["specificity"],
            "threshold_from_validation": m["threshold"], "f1": m["f1"],
            "ece_before_temperature": m["ece_uncalibrated"], "ece_after_temperature": m["ece"],
            "temperature": m["temperature"], "low_confidence": m["low_confidence"],
            "at_sensitivity_0.9": {k: m["at_target_sensitivity"][k] for k in ("sensitivity", "specificity")},
            "training_seconds": stored["training"]["total_seconds"], "members": plan["members"],
            "network": f"{plan['network']} {plan['network_params']}", "precision": plan["schedule"]["precision"],
            "threads": plan["schedule"]["threads"], "epochs": [h["epochs"] for h in stored["training"]["members"]],
            "targets": TARGETS[name], "explanation_sanity": sanity(model_dir, ds_dir),
        }
        print(name, json.dumps(results[name], indent=1))
    out = REPO / "benchmarks" / "results"
    prev = out / "classify_medmnist.json"
    if args.only and prev.exists():
        results = {**json.loads(prev.read_text()), **results}
    prev.write_text(json.dumps(results, indent=1) + "\n")
    rows = []
    for name in DATASETS:
        r = results.get(name)
        if not isinstance(r, dict):
            continue
        s = r["explanation_sanity"]
        rows.append(
            f"| {name} | {r['test_cases']} | {r['accuracy']:.3f} (>= {r['targets']['accuracy']}) | "
            f"{r['auroc']:.3f} [{r['auroc_delong_ci'][0]:.3f}, {r['auroc_delong_ci'][1]:.3f}] "
            f"(>= {r['targets']['auroc']}) | {r['sensitivity']:.3f} / {r['specificity']:.3f} | "
            f"{r['ece_before_temperature']:.3f} -> {r['ece_after_temperature']:.3f} (T={r['temperature']:.2f}) | "
            f"{r['training_seconds']:.0f} s, {r['members']} x {r['network']}, {r['precision']} | "
            f"{s['spearman_trained_vs_random_weights']:.2f} | "
            + " / ".join(f"{s[f'prob_drop_{k}_peak_vs_random'][0]:.3f} vs {s[f'prob_drop_{k}_peak_vs_random'][1]:.3f}"
                         for k in ("gradcam", "gradcampp", "occlusion")) + " |"
        )
    (out / "classify_medmnist.md").write_text(
        "Official MedMNIST v2 splits (28 px / 28^3 voxels as given, CC BY 4.0); models trained by "
        "`deepmia train classify --time-budget 15m` on a 2-core CPU shared with other jobs; test set scored once. "
        "Threshold, temperature and the low-confidence cut-off were fitted on validation.\n\n"
        "| dataset | test cases | accuracy | AUROC [DeLong 95% CI] | sens / spec at val threshold | ECE before -> "
        "after temperature | training | Grad-CAM Spearman, trained vs random weights | prob. drop: occlude Grad-CAM "
        "peak vs random box (Grad-CAM / Grad-CAM++ / occlusion) |\n|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
