"""Compression: original vs distilled vs pruned models (PneumoniaMNIST, hippocampus): accuracy, speed, size.

Usage:
    python benchmarks/compression.py [--data ../shared/data] [--work /tmp/compression] [--cls-budget 4m]
        [--seg-budget 8m] [--seg-prune 0.5,0.75] [--seg-cases 20] [--skip-seg] [--skip-cls]

PneumoniaMNIST (models/pneumoniamnist, ResNet-18 widths [32, 64, 128, 256]): ``deepmia compress --distill``
(every width halved) and ``deepmia compress --prune 0.5`` (half the channels of every layer removed by filter L1
norm, fine-tuned on the labels) and both (pruned, then fine-tuned on the teacher's soft outputs and the labels), each
trained within ``--cls-budget`` on the teacher's training split. Test AUROC
(624 official test images) with a 95% bootstrap interval, images/s of ``deepmia predict`` on the 624 test PNG files
(whole command, start-up included, and the predictor alone), parameters and weight file size. Hippocampus
(models/hippocampus, DynUNet filters [32, 64, 128, 256]): ``deepmia compress --prune R --distill`` for each R of
``--seg-prune`` (the teacher's weights pruned, then distilled), each within ``--seg-budget``; mean Dice (with
keep-largest-component as the plans choose it) on the first ``--seg-cases`` of the 52 validation cases (sorted ids)
and cases/s of ``deepmia predict`` on them. Every speed is measured original and compressed alternately in one run,
on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _commands import deepmia  # noqa: E402

MODELS = REPO / "deepmia" / "models"


def _size(model_dir: Path) -> dict[str, Any]:
    from deepmia.tasks import load_predictor

    p = load_predictor(model_dir)
    nets = getattr(p, "models", None) or []
    weights = sorted(model_dir.glob("fold_*/model_best.pt"))
    return {"parameters": int(sum(q.numel() for q in nets[0].parameters())),
            "weights_mb": round(sum(w.stat().st_size for w in weights) / 1e6, 2)}


def _predict_folder(predictor: Any, inputs: Path, out: Path) -> None:
    """The predictor on every file of ``inputs`` (read, predict, write), as ``deepmia predict`` runs it."""
    from deepmia.io import read_image

    if hasattr(predictor, "predict_path"):
        predictor.predict_path(inputs, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(inputs.iterdir()):
        predictor.predict(read_image(f)).write(out, f.name.split(".")[0])


def _speed(dirs: dict[str, Path], inputs: Path, work: Path, n_items: int, rounds: int) -> dict[str, dict[str, float]]:
    """Items/s of ``deepmia predict`` (the whole command) and of the predictor's predict_path, interleaved."""
    from deepmia.tasks import load_predictor

    cli: dict[str, list[float]] = {k: [] for k in dirs}
    inproc: dict[str, list[float]] = {k: [] for k in dirs}
    predictors = {k: load_predictor(d) for k, d in dirs.items()}
    for r in range(rounds):
        for name, d in dirs.items():
            seconds, _ = deepmia("predict", str(d), str(inputs), str(work / f"pred_{name}_{r}"))
            cli[name].append(seconds)
            t = time.perf_counter()
            _predict_folder(predictors[name], inputs, work / f"inproc_{name}_{r}")
            inproc[name].append(time.perf_counter() - t)
    return {k: {"cli_items_per_s": round(n_items / min(cli[k]), 3), "cli_seconds": cli[k],
                "predictor_items_per_s": round(n_items / min(inproc[k]), 3), "predictor_seconds": inproc[k]}
            for k in dirs}


def _network_speed(dirs: dict[str, Path], dataset_dir: Path, rounds: int) -> dict[str, float]:
    """Images/s of the predictors' networks (test-time mirroring included) on the preprocessed test images: the
    part compression changes, without reading files; best of ``rounds``, models interleaved."""
    from deepmia.data.dataset import Dataset
    from deepmia.tasks.classify.data import load_cases
    from deepmia.tasks.classify.predict import Predictor

    ds = Dataset.load(dataset_dir)
    predictors = {k: Predictor(d) for k, d in dirs.items()}
    x = load_cases(ds, list(ds.splits.test), predictors["original"].plan)
    best = dict.fromkeys(dirs, float("inf"))
    for _ in range(rounds):
        for k, p in predictors.items():
            t = time.perf_counter()
            p.predict_arrays(x)
            best[k] = min(best[k], time.perf_counter() - t)
    return {k: round(len(x) / s, 1) for k, s in best.items()}


def _test_auroc(model_dir: Path, dataset_dir: Path) -> dict[str, float]:
    from deepmia.data.dataset import Dataset
    from deepmia.metrics.classification import auroc_report
    from deepmia.tasks.classify.data import labels_of, load_cases
    from deepmia.tasks.classify.predict import Predictor

    ds = Dataset.load(dataset_dir)
    p = Predictor(model_dir)
    ids = list(ds.splits.test)
    prob = p.predict_arrays(load_cases(ds, ids, p.plan))["probabilities"]
    rep = auroc_report(labels_of(ds, ids, p.plan), prob, n_resamples=2000)["macro"]
    return {"n": len(ids), "auroc": rep["auc"], "ci_low": rep["bootstrap"]["low"], "ci_high": rep["bootstrap"]["high"]}


def classification(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ds = work / "pneumoniamnist"
    if not ds.exists():
        deepmia("dataset", "import", "medmnist", str(args.data / "medmnist" / "pneumoniamnist.npz"), str(ds))
    dirs = {"original": MODELS / "pneumoniamnist", "distilled": work / "pneu_distilled", "pruned": work / "pneu_pruned",
            "pruned+distilled": work / "pneu_pruned_distilled"}
    runs = {"distilled": ["--distill"], "pruned": ["--prune", "0.5"],
            "pruned+distilled": ["--prune", "0.5", "--distill"]}
    train_s = {}
    for name, flags in runs.items():
        if not (dirs[name] / "compression.json").exists():
            train_s[name], _ = deepmia("compress", str(dirs["original"]), "--out", str(dirs[name]), "--dataset",
                                       str(ds), *flags, "--time-budget", args.cls_budget,
                                       log=work / f"compress_{name.replace('+', '_')}.log")
    inputs = work / "pneu_test_png"
    if not inputs.exists():
        from deepmia.data.dataset import Dataset

        d = Dataset.load(ds)
        inputs.mkdir()
        for cid in d.splits.test:
            src = d.path(d.case(cid).images[0])
            (inputs / src.name).symlink_to(src)
    n = len(list(inputs.iterdir()))
    speed = _speed(dirs, inputs, work, n, rounds=args.cli_rounds)
    network = _network_speed(dirs, ds, rounds=5)
    out = {}
    for name, d in dirs.items():
        out[name] = {**_test_auroc(d, ds), **_size(d), **speed[name], "network_items_per_s": network[name],
                     "widths": json.loads((d / "plan.json").read_text())["network_params"]["widths"]}
        if name in runs:
            rec = json.loads((d / "compression.json").read_text())
            out[name].update(compress_seconds=train_s.get(name), epochs=rec["training"]["epochs"],
                             validation_auroc=rec["validation_auroc"])
    return {"test_images": n, "models": out, "budget": args.cls_budget}


def _dice_subset(model_dir: Path, dataset, ids: list[str]) -> float:
    from deepmia.metrics.segmentation import dice_per_label
    from deepmia.tasks.segment.predict import Predictor

    p = Predictor(model_dir)
    scores = []
    for cid in ids:
        image = dataset.read_image(cid)
        ref = dataset.read_label(cid, image=image).array[0]
        scores.append(np.nanmean(list(dice_per_label(p.predict(image).labels.array[0], ref, [1, 2]).values())))
    return float(np.mean(scores))


def segmentation(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from deepmia.data.dataset import Dataset

    ds = work / "hippocampus"
    if not ds.exists():
        deepmia("dataset", "import", "msd", str(args.data / "hippocampus"), str(ds), "--link", "--labels",
                "0=background,1=anterior,2=posterior")
    dirs = {"original": MODELS / "hippocampus"}
    train_s = {}
    for ratio in args.seg_prune.split(","):
        name = f"pruned {ratio} + distilled"
        dirs[name] = work / f"hippo_pruned_{ratio}"
        if not (dirs[name] / "compression.json").exists():
            train_s[name], _ = deepmia("compress", str(dirs["original"]), "--out", str(dirs[name]), "--dataset",
                                       str(ds), "--prune", ratio, "--distill", "--time-budget", args.seg_budget,
                                       "--cache", str(work / "cache"), log=work / f"compress_hippo_{ratio}.log")
    dataset = Dataset.load(ds)
    ids = sorted(json.loads((dirs["original"] / "split.json").read_text())["val"])[: args.seg_cases]
    inputs = work / "hippo_val_subset"
    if not inputs.exists():
        inputs.mkdir()
        for cid in ids:
            src = dataset.path(dataset.case(cid).images[0])
            (inputs / src.name).symlink_to(src.resolve())
    speed = _speed(dirs, inputs, work, len(ids), rounds=1)
    out = {}
    for name, d in dirs.items():
        out[name] = {"dice_subset": _dice_subset(d, dataset, ids), **_size(d), **speed[name],
                     "filters": json.loads((d / "plan.json").read_text())["network_params"]["filters"]}
    for name in list(dirs)[1:]:
        rec = json.loads((dirs[name] / "compression.json").read_text())
        out[name].update(compress_seconds=train_s.get(name), training=rec["training"],
                         validation_dice_52=rec["validation_dice"])
        out["original"]["validation_dice_52"] = rec["teacher_validation_dice"]
    return {"cases": len(ids), "case_ids": ids, "models": out, "budget": args.seg_budget}


def markdown(res: dict[str, Any]) -> str:
    lines = []
    c = res.get("classification")
    if c:
        o = c["models"]["original"]
        lines += [f"PneumoniaMNIST, {c['test_images']} test images; students trained for at most {c['budget']} each "
                  "(this shared 2-core CPU, heavily loaded by other jobs). images/s: `deepmia predict` on the PNG "
                  "files (whole command incl. start-up) / the predictor's predict_path alone / the predictor on the "
                  "preprocessed arrays (network with test-time mirroring; best of 5); models interleaved.", "",
                  "| model | widths | parameters | weights MB | test AUROC [95% bootstrap CI] | images/s (command) | "
                  "images/s (predictor) | images/s (network) | speed-up (network) |",
                  "|---|---|---:|---:|---|---:|---:|---:|---:|"]
        for name, m in c["models"].items():
            ratio = m.get("network_items_per_s", 0) / o.get("network_items_per_s", 1)
            lines.append(f"| {name} | {m['widths']} | {m['parameters']:,} | {m['weights_mb']} | {m['auroc']:.4f} "
                         f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}] | {m['cli_items_per_s']} | "
                         f"{m['predictor_items_per_s']} | {m.get('network_items_per_s')} | {ratio:.2f}x |")
    s = res.get("segmentation")
    if s:
        o = s["models"]["original"]
        lines += ["", "Hippocampus: each student (the teacher's weights pruned, then distilled) trained within the "
                  "budget of its own run (training minutes and steps in the table; the teacher: 60 min, 4500 steps). "
                  f"Dice: mean of anterior/posterior on the first {s['cases']} of the 52 validation cases "
                  "(sorted ids); validation Dice (52) from the model directories' metrics.", "",
                  "| model | filters | parameters | weights MB | training min (steps) | Dice (subset) "
                  "| validation Dice (52) | cases/s (command) | cases/s (predictor) | speed-up (predictor) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in s["models"].items():
            v = m.get("validation_dice_52")
            ratio = m["predictor_items_per_s"] / o["predictor_items_per_s"]
            val = "" if v is None else f"{v:.4f}"
            tr = m.get("training")
            steps = f"{tr['minutes']} ({tr['steps']})" if tr else "60 (4500)"
            lines.append(f"| {name} | {m['filters']} | {m['parameters']:,} | {m['weights_mb']} | {steps} "
                         f"| {m['dice_subset']:.4f} | {val} | {m['cli_items_per_s']} | {m['predictor_items_per_s']} "
                         f"| {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/compression"))
    ap.add_argument("--cls-budget", default="4m")
    ap.add_argument("--seg-budget", default="8m")
    ap.add_argument("--seg-cases", type=int, default=20)
    ap.add_argument("--seg-prune", default="0.5,0.75", help="prune ratios of the hippocampus students (each distilled)")
    ap.add_argument("--skip-seg", action="store_true")
    ap.add_argument("--cli-rounds", type=int, default=2, help="rounds of the interleaved deepmia predict timing")
    ap.add_argument("--skip-cls", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = REPO / "benchmarks" / "results" / "compression.json"

    def save(key: str, value: dict[str, Any]) -> dict[str, Any]:
        """Merge one part into the results file (the other part may come from another run)."""
        res = json.loads(results_path.read_text()) if results_path.exists() else {}
        res.update({key: value}, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   machine={"cpu": platform.processor() or platform.machine(), "python": platform.python_version()})
        results_path.write_text(json.dumps(res, indent=1, default=float) + "\n")
        results_path.with_suffix(".md").write_text(markdown(res))
        return res

    if not args.skip_cls:
        res = save("classification", classification(args, args.work))
    if not args.skip_seg:
        res = save("segmentation", segmentation(args, args.work))
    print(markdown(res))


if __name__ == "__main__":
    main()
