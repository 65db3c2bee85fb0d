"""Classification on PneumoniaMNIST and AdrenalMNIST3D: test metrics, ECE before/after temperature scaling.

Usage:
    python benchmarks/classify_medmnist.py [--data ../shared/data] [--train] [--budget 15m]

With ``--train`` each model is (re)trained by ``deepmia train classify --dataset DIR --out models/<name>
--time-budget 15m`` (the same command, no dataset-specific code); without it the shipped models are evaluated.
Either way the official test split is scored once with ``deepmia evaluate classify --record`` (accuracy, AUROC
with DeLong and bootstrap 95% CIs, ECE before and after temperature scaling) and the explanation sanity checks
run on real test images (Adebayo's weight randomisation; deletion of each map's top 10% vs shifted masks).
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


def sanity(model_dir: Path, dataset_dir: Path) -> dict[str, object]:
    """Explanation sanity checks on real test cases, the protocol of tests/explain/.

    Weight randomisation (Adebayo): mean |Spearman rho| between Grad-CAM maps of the trained and of a randomly
    initialised network on the first 16 positive test cases (low = the map depends on the weights). Deletion: each
    map's top 10% of voxels filled with the input's mean vs the mean of 8 shifted copies of that mask, per image
    paired (one-sided Wilcoxon). 2D: the first 60 test images, each explained for its predicted class, all three
    methods. 3D: the first 30 positive test volumes explained for class 1 (the volumes are binary gland masks and
    "normal" has no region to delete), Grad-CAM and Grad-CAM++ (an occlusion map of a 28^3 volume takes ~20 s on
    this CPU, too slow for the check's 30 volumes).
    """
    from scipy.stats import wilcoxon

    from deepmia.data.dataset import Dataset
    from deepmia.explain.saliency import deletion_drops, randomization_similarity, saliency_map, target_layer
    from deepmia.nn import build_network
    from deepmia.tasks.classify.data import load_cases
    from deepmia.tasks.classify.predict import Predictor

    p = Predictor(model_dir)
    ds = Dataset.load(dataset_dir)
    model = p.models[0].eval()
    positives = [c for c in ds.splits.test if ds.case(c).classes == [1]]
    x = torch.from_numpy(load_cases(ds, positives[:16], p.plan))
    rand = build_network(p.plan.network, spatial_dims=p.plan.spatial_dims, in_channels=1, out_channels=2,
                         **p.plan.network_params).eval()
    layer = target_layer(model, x[:1])
    sims = [
        randomization_similarity(saliency_map(model, xi, method="gradcam", class_index=1, layer=layer),
                                 saliency_map(rand, xi, method="gradcam", class_index=1, layer=layer))
        for xi in x.split(1)
    ]
    out: dict[str, object] = {"randomisation_cases": len(x), "layer": layer,
                              "abs_spearman_trained_vs_random_weights": float(np.mean(np.abs(sims)))}
    if p.plan.spatial_dims == 2:
        ids, methods = list(ds.splits.test)[:60], ("gradcam", "gradcampp", "occlusion")
        x = torch.from_numpy(load_cases(ds, ids, p.plan))
        with torch.no_grad():
            classes = model(x).argmax(1).tolist()
    else:
        ids, methods = positives[:30], ("gradcam", "gradcampp")
        x = torch.from_numpy(load_cases(ds, ids, p.plan))
        classes = [1] * len(ids)
    out["deletion_cases"] = len(ids)
    for method in methods:
        top, shifted = deletion_drops(model, x, classes, method=method, layer=layer, fraction=0.1)
        out[f"deletion_{method}"] = {"top10_drop": float(top.mean()), "shifted_drop": float(shifted.mean()),
                                     "wilcoxon_p": float(wilcoxon(top - shifted, alternative="greater").pvalue)}
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
            f"{s['abs_spearman_trained_vs_random_weights']:.2f} | "
            + " / ".join(
                f"{d['top10_drop']:.3f} vs {d['shifted_drop']:.3f} (p={d['wilcoxon_p']:.0e})" if d else "-"
                for d in (s.get(f"deletion_{k}") for k in ("gradcam", "gradcampp", "occlusion"))
            ) + f" ({s['deletion_cases']} cases) |"
        )
    (out / "classify_medmnist.md").write_text(
        "Official MedMNIST v2 splits (28 px / 28^3 voxels as given, CC BY 4.0); models trained by "
        "`deepmia train classify --time-budget 15m` on a 2-core CPU shared with other jobs; test set scored once. "
        "Threshold, temperature and the low-confidence cut-off were fitted on validation.\n\n"
        "| dataset | test cases | accuracy | AUROC [DeLong 95% CI] | sens / spec at val threshold | ECE before -> "
        "after temperature | training | Grad-CAM mean abs Spearman, trained vs random weights | deletion: prob. drop, "
        "top 10% of the map filled vs 8 shifted masks, one-sided Wilcoxon (Grad-CAM / Grad-CAM++ / occlusion) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    main()
