"""Blood-cell detection on BCCD with the generic commands: import -> train -> predict -> evaluate (+ YOLOv8n).

Every deepmia step is a ``deepmia`` command:

1. ``deepmia dataset import voc BCCD WORK/dataset --link``: Pascal VOC with the official ``ImageSets/Main``
   split (train 205, val 87, test 72 images; the test images are held out).
2. ``deepmia train detect --time-budget 60m`` (plan from the training boxes; the validation images choose the
   epoch and the test-time augmentation), or ``--model DIR`` to score an existing model without training.
3. ``deepmia predict MODEL WORK/test_images WORK/pred_deepmia`` on the 72 test images (COCO results).
4. ``deepmia evaluate detect WORK/pred_deepmia WORK/dataset --split test``: COCO mAP@[.5:.95], mAP@0.5,
   per-class AP, AR@100, FROC/CPM (IoU 0.5), bootstrap 95% intervals over images.

The test split is scored once: predictions are kept in ``WORK/pred_deepmia`` (with the model they came from)
and a re-run for the same model reuses them instead of predicting again.

With ``--yolo-venv DIR``, ultralytics YOLOv8n is trained from scratch (``yolov8n.yaml``, no pretrained weights)
on the same train/val images with the same wall-clock budget as the deepmia model, in a separate virtual
environment used only here (ultralytics is AGPL: never a dependency of deepmia). The script creates the venv
if needed (``torch==2.13.0`` pinned by a constraints file, then ``pip install ultralytics``); every install,
build and training step is recorded with its command and, where it fails, its error, which becomes the YOLOv8n
row of the table. Its test predictions are written as COCO results and scored by the same
``deepmia evaluate detect``. The same file, run with ``--yolo-worker`` by the venv's Python, is the training
side (it imports only ultralytics).

Targets (issue 6): mAP@0.5 >= 0.85 and mAP@[.5:.95] >= 0.55 on the test split, within 60 minutes of training.

Usage: python benchmarks/detection_bccd.py [--data ../shared/data] [--time-budget 60m | --model DIR]
       [--work DIR] [--yolo-venv /tmp/yolo-venv]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _commands import deepmia, run  # benchmarks/ is on sys.path when a script runs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGETS = {"map50": 0.85, "map": 0.55}
FULL_BUDGET_S = 60 * 60
TAIL = 1500  # characters of a failed command's output kept in the results


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_images(dataset_dir: Path, out: Path) -> list[str]:
    """A folder of links to the dataset's test images (``deepmia predict`` reads a folder); their case ids."""
    from deepmia.data.dataset import Dataset

    ds = Dataset.load(dataset_dir, check_files=False)
    out.mkdir(parents=True, exist_ok=True)
    for cid in ds.splits.test:
        src = ds.path(ds.case(cid).images[0]).resolve()
        link = out / src.name
        if not link.exists():
            link.symlink_to(src)
    return list(ds.splits.test)


def scores(m: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``evaluate detect --json``."""
    coco, froc = m["coco"], m["froc"]

    def ci(entry: dict[str, Any]) -> dict[str, float]:
        return {"value": entry["estimate"], "ci_low": entry["low"], "ci_high": entry["high"]}

    return {
        "n_images": m["n_images"],
        "map": ci(coco["map_ci"]),
        "map50": ci(coco["map50_ci"]),
        "map75": coco["map75"],
        "ar100": coco["ar100"],
        "per_class": {k: {"ap": v["ap"], "ap50": v["ap50"], "ar100": v["ar100"]} for k, v in coco["per_class"].items()},
        "cpm": ci(froc["cpm_ci"]),
        "froc": dict(zip((str(r) for r in froc["fp_rates"]), froc["sensitivity"], strict=True)),
        "froc_iou": m["froc_iou"],
        "images_without_predictions": m.get("images_without_predictions"),
    }


def evaluate(pred: Path, dataset: Path, out: Path, resamples: int) -> tuple[float, dict[str, Any]]:
    seconds, stdout = deepmia("evaluate", "detect", str(pred), str(dataset), "--split", "test", "--out", str(out),
                              "--resamples", str(resamples), "--json")
    return seconds, scores(json.loads(stdout))


# ---------------------------------------------------------------- YOLOv8n (ultralytics, separate venv)


def yolo_dataset(dataset_dir: Path, out: Path) -> Path:
    """The train/val images of the deepmia dataset in YOLO layout (links + normalised ``cls cx cy w h``)."""
    from deepmia.data.dataset import Dataset

    ds = Dataset.load(dataset_dir, check_files=False)
    names = ds.spec.class_names()
    fold = ds.splits.folds[0]
    for split, ids in (("train", fold.train), ("val", fold.val)):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for cid in ids:
            case = ds.case(cid)
            src = ds.path(case.images[0]).resolve()
            link = out / "images" / split / src.name
            if not link.exists():
                link.symlink_to(src)
            w, h = case.shape  # (X = columns, Y = rows)
            lines = [f"{names.index(b.label)} {(b.box[0] + b.box[2]) / 2 / w:.6f} {(b.box[1] + b.box[3]) / 2 / h:.6f} "
                     f"{(b.box[2] - b.box[0]) / w:.6f} {(b.box[3] - b.box[1]) / h:.6f}"
                     for b in case.boxes if not b.ignore]
            (out / "labels" / split / f"{src.stem}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = out / "data.yaml"
    data_yaml.write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n"
                         + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    return data_yaml


def yolo_worker(args: argparse.Namespace) -> None:
    """Inside the YOLO venv: train YOLOv8n from scratch within the budget, predict the test images, write JSON."""
    from ultralytics import YOLO

    out: Path = args.yolo_out
    done = out / "train_done.json"  # a finished training is kept: a re-run only predicts again
    if not done.exists():
        model = YOLO("yolov8n.yaml")
        t = time.perf_counter()
        model.train(data=str(args.yolo_data), time=args.yolo_hours, epochs=1000, imgsz=640, batch=16,
                    device="cpu", workers=2, pretrained=False, amp=False, plots=False, seed=0, project=str(out),
                    name="train", exist_ok=True, verbose=False)
        done.write_text(json.dumps({"train_s": round(time.perf_counter() - t, 1)}) + "\n")
    train_s = json.loads(done.read_text())["train_s"]
    best = YOLO(str(out / "train" / "weights" / "best.pt"))
    rows = []
    t = time.perf_counter()
    images = sorted(p for p in args.yolo_test.iterdir())
    for r in best.predict(source=[str(p) for p in images], conf=0.001, iou=0.7, max_det=100, imgsz=640,
                          device="cpu", stream=True, verbose=False):
        stem = Path(r.path).stem
        for box, cls, conf in zip(r.boxes.xyxy.tolist(), r.boxes.cls.tolist(), r.boxes.conf.tolist(), strict=True):
            rows.append({"image_id": stem, "category_id": int(cls) + 1, "score": round(float(conf), 5),
                         "bbox": [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2),
                                  round(box[3] - box[1], 2)]})
    predict_s = time.perf_counter() - t
    results_csv = (out / "train" / "results.csv").read_text().strip().splitlines()
    (out / "predictions.json").write_text(json.dumps(rows) + "\n")
    (out / "run.json").write_text(json.dumps({
        "train_s": train_s, "predict_s": round(predict_s, 1), "epochs": len(results_csv) - 1,
        "test_images": len(images), "ultralytics": __import__("ultralytics").__version__,
        "torch": __import__("torch").__version__, "torchvision": __import__("torchvision").__version__,
    }, indent=1) + "\n")


def yolo_env(venv: Path, work: Path) -> tuple[list[dict[str, Any]], bool]:
    """Create the YOLO venv when it lacks ultralytics and check that YOLOv8n builds and torchvision's NMS runs.

    First with the local CPU wheel ``torch==2.13.0+cpu``; PyPI's only torchvision for torch 2.13.0 (0.28.0) is
    built against CUDA, so when its compiled ops do not load, torch is replaced by PyPI's ``torch==2.13.0``
    (the CUDA build, which also runs on a CPU) and the checks run again.

    Returns the steps (command, rc, error tail) and whether everything needed runs.
    """
    py = venv / "bin" / "python"
    pip = [str(venv / "bin" / "pip"), "install", "--progress-bar", "off"]
    steps: list[dict[str, Any]] = []

    def step(cmd: list[str]) -> bool:
        r = run(cmd)
        steps.append({"command": r["command"], "rc": r["rc"], "seconds": r["seconds"],
                      **({"error": r["output"][-TAIL:]} if r["rc"] else {})})
        return r["rc"] == 0

    def works() -> bool:
        return (step([str(py), "-c", "import torch, torchvision; from ultralytics import YOLO; "
                      "YOLO('yolov8n.yaml'); print(torch.__version__, torchvision.__version__)"])
                and step([str(py), "-c", "import torch, torchvision; print(torchvision.ops.nms("
                          "torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]), 0.5))"]))

    if not (py.exists() and run([str(py), "-c", "import ultralytics"])["rc"] == 0):
        constraints = work / "yolo_constraints.txt"
        constraints.write_text("torch==2.13.0\n")
        if not (step(["python3.11", "-m", "venv", str(venv)]) and step([*pip, "torch==2.13.0+cpu"])
                and step([*pip, "-c", str(constraints), "ultralytics"])):
            return steps, False
    if works():
        return steps, True
    return steps, step([*pip, "torch==2.13.0,!=2.13.0+cpu"]) and works()


def yolo_row(args: argparse.Namespace, dataset: Path, test_dir: Path, budget_s: float, work: Path
             ) -> dict[str, Any]:
    """Train and score YOLOv8n, or record why it could not run."""
    out = work / "yolo"
    row: dict[str, Any] = {"venv": str(args.yolo_venv), "budget_s": budget_s}
    if not (out / "predictions.json").exists():
        steps, ok = yolo_env(args.yolo_venv, work)
        row["steps"] = steps
        if not ok:
            return row
        data_yaml = yolo_dataset(dataset, Path(args.yolo_dir))
        out.mkdir(parents=True, exist_ok=True)
        cmd = [str(args.yolo_venv / "bin" / "python"), str(Path(__file__).resolve()), "--yolo-worker",
               "--yolo-data", str(data_yaml), "--yolo-out", str(out), "--yolo-test", str(test_dir),
               "--yolo-hours", f"{budget_s / 3600:.6f}"]
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(out / "config")}
        r = run(cmd, log=work / "yolo_train.log", env=env)
        row["steps"].append({"command": r["command"], "rc": r["rc"], "seconds": r["seconds"],
                             **({"error": r["output"][-TAIL:]} if r["rc"] else {})})
        if r["rc"] != 0:
            return row
        (out / "categories.json").write_text(json.dumps(_categories(dataset)) + "\n")
        (out / "steps.json").write_text(json.dumps(row["steps"], indent=1) + "\n")
    else:  # reused: the steps of the run that trained it
        row["steps"] = json.loads((out / "steps.json").read_text())
    row["run"] = json.loads((out / "run.json").read_text())
    epochs = (out / "train" / "results.csv").read_text().strip().splitlines()
    col = [c.strip() for c in epochs[0].split(",")].index("metrics/mAP50(B)")
    row["val_map50_by_epoch"] = [float(line.split(",")[col]) for line in epochs[1:]]
    _, row["test"] = evaluate(out, dataset, work / "eval_yolo", args.resamples)
    return row


def _categories(dataset: Path) -> list[dict[str, Any]]:
    from deepmia.data.dataset import Dataset

    names = Dataset.load(dataset, check_files=False).spec.class_names()
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)]


# ---------------------------------------------------------------- report


def fmt(entry: dict[str, float]) -> str:
    return f"{entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"


def table_row(name: str, minutes: str, s: dict[str, Any]) -> str:
    pc = s["per_class"]
    return (f"| {name} | {minutes} | {fmt(s['map'])} | {fmt(s['map50'])} | {s['map75']:.3f} | {s['ar100']:.3f} | "
            + " | ".join(f"{pc[c]['ap50']:.3f} / {pc[c]['ap']:.3f}" for c in sorted(pc))
            + f" | {fmt(s['cpm'])} |")


def _rising(curve: list[float]) -> bool:
    """Whether the last value of a curve is its highest, above every earlier one."""
    return len(curve) > 1 and curve[-1] > max(curve[:-1])


def markdown(result: dict[str, Any]) -> str:
    d = result["deepmia"]
    tr = d["training"]
    classes = sorted(d["test"]["per_class"])
    lines = [
        "### Detection, BCCD blood cells (test split, 72 images)",
        "",
        "Data: BCCD (Pascal VOC, MIT licence), official `ImageSets/Main` split: trained on the 205 train images, "
        "the 87 val images chose the epoch and the test-time augmentation, scored once on the 72 test images. "
        "95% intervals: bootstrap over images (1000 resamples). CPM: mean FROC sensitivity at 1/8-8 false "
        "positives per image (IoU 0.5). Machine: 2-core CPU, no GPU.",
        f"Command: `{result['command']}`; deepmia steps: "
        + "; ".join(f"`{c}`" for c in result["commands"]) + ".",
        "",
        "| model | training | mAP@[.5:.95] | mAP@0.5 | mAP@0.75 | AR@100 | "
        + " | ".join(f"{c} AP@0.5 / AP" for c in classes) + " | CPM |",
        "|---|---|---|---|---|---|" + "---|" * len(classes) + "---|",
        table_row("deepmia RetinaNet", f"{tr['seconds'] / 60:.1f} min, {tr['epochs']} epochs", d["test"]),
    ]
    yolo = result.get("yolov8n")
    if yolo and "test" in yolo:
        run_ = yolo["run"]
        lines.append(table_row("YOLOv8n (ultralytics, from scratch)",
                               f"{run_['train_s'] / 60:.1f} min, {run_['epochs']} epochs", yolo["test"]))
    met = result["targets_met"]
    lines += [
        "",
        f"Targets on test: mAP@0.5 >= {TARGETS['map50']} ({'met' if met['map50'] else 'not met'}), mAP@[.5:.95] >= "
        f"{TARGETS['map']} ({'met' if met['map'] else 'not met'}). The deepmia model trained "
        f"{tr['seconds'] / 60:.0f} min (`--time-budget {d['time_budget_s'] / 60:.0f}m`, best epoch "
        f"{tr['best_epoch']}) of the 60 min the issue allows; validation (87 images): mAP@0.5 "
        f"{d['validation']['map50']:.3f}, mAP@[.5:.95] {d['validation']['map']:.3f}.",
    ]
    if yolo is not None:
        lines.append("")
        if "test" in yolo:
            r = yolo["run"]
            lines.append(
                f"YOLOv8n: `yolov8n.yaml` (no pretrained weights), imgsz 640, batch 16, "
                f"`time={yolo['budget_s'] / 3600:.4f}` h (the deepmia model's budget), best epoch by ultralytics' "
                f"fitness on the same 87 val images; test "
                f"predictions at conf 0.001, NMS IoU 0.7, 100 per image, written as COCO results and scored by "
                f"`deepmia evaluate detect`. ultralytics {r['ultralytics']}, torch {r['torch']}, torchvision "
                f"{r['torchvision']}, in `{yolo['venv']}` (a separate venv; AGPL, not a deepmia dependency). "
                f"In the budget it ran {r['epochs']} epochs; its validation mAP@0.5 by epoch (ultralytics' "
                f"own validator): {', '.join(f'{v:.3f}' for v in yolo['val_map50_by_epoch'])}"
                + (", still rising." if _rising(yolo["val_map50_by_epoch"]) else "."))
        else:
            lines.append("YOLOv8n could not run here.")
        steps = yolo.get("steps", [])
        if steps:
            lines += ["", f"YOLOv8n steps (separate venv `{yolo['venv']}`):", ""]
            lines += [f"- `{s['command']}` -> exit {s['rc']} ({s['seconds']:.0f} s)" for s in steps]
        failed = next((s for s in steps if s["rc"] != 0), None)
        if failed is not None:
            error = "\n".join(failed["error"].strip().splitlines()[-8:])
            if "test" in yolo:
                lines += ["", "The local CPU wheel cannot import PyPI's torchvision for torch 2.13.0 (a CUDA build); "
                          "PyPI's torch 2.13.0 (CUDA build, run on the CPU) can, and trained the row above."]
            lines += ["", f"Error of the first failing step (`{failed['command']}`):", "", "```", error, "```"]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--time-budget", default="60m", help="Training budget when training (default 60m).")
    parser.add_argument("--model", type=Path, default=None, help="Score this model directory instead of training.")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "detection_bccd",
                        help="Dataset, model, predictions (default out/detection_bccd; git-ignored).")
    parser.add_argument("--resamples", type=int, default=1000, help="Bootstrap resamples for the intervals.")
    parser.add_argument("--yolo-venv", type=Path, default=None,
                        help="Train and score YOLOv8n in this separate venv (created if it lacks ultralytics).")
    parser.add_argument("--yolo-dir", type=Path, default=Path("/tmp/bccd_yolo"), help="The YOLO-format copy.")
    parser.add_argument("--yolo-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--yolo-data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--yolo-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--yolo-test", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--yolo-hours", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.yolo_worker:
        yolo_worker(args)
        return

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "dataset"
    seconds: dict[str, float] = {"import": 0.0, "train": 0.0, "predict": 0.0}
    commands = []
    if not (dataset / "dataset.json").exists():
        seconds["import"], _ = deepmia("dataset", "import", "voc", str(args.data / "bccd" / "BCCD"), str(dataset),
                                       "--link")
    commands.append("deepmia dataset import voc ../shared/data/bccd/BCCD DATASET --link")
    if args.model is None:
        model = work / "model"
        seconds["train"], _ = deepmia("train", "detect", "--dataset", str(dataset), "--out", str(model),
                                      "--time-budget", args.time_budget, log=work / "train.log")
        commands.append(f"deepmia train detect --dataset DATASET --out MODEL --time-budget {args.time_budget}")
    else:
        model = args.model
    test_dir = work / "test_images"
    test_images(dataset, test_dir)
    pred = work / "pred_deepmia"
    source = {"model": str(model.resolve()), "weights_sha256": sha256(model / "fold_0" / "model_best.pt")}
    if not ((pred / "predictions.json").exists() and (pred / "model.json").exists()
            and json.loads((pred / "model.json").read_text()) == source):
        shutil.rmtree(pred, ignore_errors=True)
        seconds["predict"], _ = deepmia("predict", str(model), str(test_dir), str(pred))
        (pred / "model.json").write_text(json.dumps(source, indent=1) + "\n")
    commands.append("deepmia predict MODEL TEST_IMAGES PRED")
    seconds["evaluate"], test = evaluate(pred, dataset, work / "eval_deepmia", args.resamples)
    commands.append("deepmia evaluate detect PRED DATASET --split test")

    plan = json.loads((model / "plan.json").read_text())
    metrics = json.loads((model / "metrics.json").read_text())
    val = metrics["validation"]["coco"]
    budget_s = float(plan["schedule"]["time_budget_s"])
    result: dict[str, Any] = {
        "benchmark": "detection_bccd",
        "command": "python benchmarks/detection_bccd.py " + " ".join(sys.argv[1:]),
        "commands": commands,
        "data": str(args.data / "bccd" / "BCCD"),
        "split": "official VOC ImageSets/Main: train 205, val 87, test 72",
        "deepmia": {
            "model": str(model), "weights_sha256": source["weights_sha256"], "time_budget_s": budget_s,
            "training": metrics["training"], "validation": {"map": val["map"], "map50": val["map50"]},
            "test": test,
        },
        "targets": TARGETS,
        "targets_met": {k: test[k]["value"] >= v for k, v in TARGETS.items()},
        "seconds": seconds,
        "machine": {"cpu_cores": os.cpu_count(), "gpu": None, "python": platform.python_version(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    if args.yolo_venv is not None:
        result["yolov8n"] = yolo_row(args, dataset, test_dir, budget_s, work)
    results_dir = HERE / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "detection_bccd.json").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / "detection_bccd.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {results_dir}/detection_bccd.json and .md")


if __name__ == "__main__":
    main()
