"""Portable inference runtimes: MONAI fp32 vs torch bf16 vs ONNX Runtime fp32/INT8 vs OpenVINO f32/bf16/INT8.

Segmentation: the fold-0 validation volumes of models/hippocampus (split.json), whole cases through each runtime
with the same preprocessing and sliding window (no mirroring, no post-processing, as in segmentation_inference.py);
the baseline is MONAI's SlidingWindowInferer in fp32 eager on the same network. Classification: PneumoniaMNIST
test (AUC); detection: BCCD test (COCO mAP). Each runtime runs in its own process (peak RSS = ru_maxrss of that
process), with 2 threads; the runtimes are interleaved over rounds (A B C ... A B C ...) so that other jobs' load
falls on all of them alike, and cases/s is the median over rounds. The models are copied to a scratch folder and
exported there (`deepmia export onnx`, INT8 calibrated on 16 training cases each).

Usage: python benchmarks/inference_runtimes.py [--data ../shared/data] [--rounds 2] [--big] [--cases N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEG = [("monai", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"),
       ("openvino", "bf16"), ("openvino", "int8")]
CLS = [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
DET = [("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
BIG = [("monai", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]
THREADS = 2


def _cpu() -> str:
    """The CPU's model name and whether it runs bf16 natively (AVX-512 BF16 / AMX)."""
    from deepmia.engine.runtime import bf16_supported

    name = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                 if x.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return f"{name}, native bf16: {'yes' if bf16_supported('cpu') else 'no'}"


def _runnable(runtimes: list) -> list:
    """The runtimes this CPU runs: without native bf16, torch runs fp32 and OpenVINO bf16 is left out (oneDNN would
    emulate it about 100x slower; deepmia refuses an explicit bf16 there)."""
    if _cpu().endswith("yes"):
        return runtimes
    kept = [("torch", "fp32") if r == ("torch", "bf16") else r for r in runtimes if r != ("openvino", "bf16")]
    return list(dict.fromkeys(kept))


def _deepmia(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "deepmia"), *args], check=True, capture_output=True, text=True)


def prepare(work: Path, data: Path, tasks: list[str]) -> dict[str, str]:
    """Copies of the models ``tasks`` need in ``work``, exported to ONNX (fp32 + INT8), and their datasets."""
    from deepmia.tasks import resolve_model

    out = {}
    for name, calib in [("hippocampus", data / "hippocampus" / "images"),
                        ("bccd", data / "bccd" / "BCCD" / "JPEGImages"),
                        ("pneumoniamnist", work / "pneumoniamnist_ds")]:
        if {"hippocampus": "segment", "bccd": "detect", "pneumoniamnist": "classify"}[name] not in tasks:
            continue
        model = work / name
        if not (model / "fold_0" / "model_int8.onnx").is_file():
            shutil.rmtree(model, ignore_errors=True)
            shutil.copytree(resolve_model(name), model)
            if name == "pneumoniamnist" and not calib.is_dir():
                from deepmia.data.medmnist import import_medmnist

                import_medmnist(data / "medmnist" / "pneumoniamnist.npz", calib, limit=200)
            _deepmia("export", "onnx", str(model))
            _deepmia("export", "onnx", str(model), "--quantize", "int8", "--calibration", str(calib))
        out[name] = str(model)
    if "detect" in tasks and not (work / "bccd_ds" / "dataset.json").is_file():
        from deepmia.data.importers import import_voc

        import_voc(data / "bccd" / "BCCD", work / "bccd_ds", link=True)
    out["bccd_ds"] = str(work / "bccd_ds")
    return out


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn, items) -> tuple[list, float, float]:
    """Outputs, wall seconds and CPU seconds of this process (all its threads) over ``fn(x)`` for each item."""
    outs, total, cpu = [], 0.0, 0.0
    for x in items:
        t, c = time.perf_counter(), time.process_time()
        outs.append(fn(x))
        total += time.perf_counter() - t
        cpu += time.process_time() - c
    return outs, total, cpu


def segment(runtime: str, precision: str, model: Path, data: Path, cases: int, big: bool) -> dict:
    """Whole validation cases (or one synthetic 512x512x300 volume) through one runtime; Dice vs the labels."""
    import torch

    from deepmia.image import Image
    from deepmia.io import read_image
    from deepmia.metrics.segmentation import dice_per_label
    from deepmia.tasks.segment.predict import Predictor
    from deepmia.tasks.segment.preprocess import apply_normalization

    rt = "torch" if runtime == "monai" else runtime
    predictor = Predictor(model, folds=[0], tta=False, postprocess=False, runtime=rt, precision=precision)
    torch.set_num_threads(THREADS)
    plan = predictor.plan
    if big:
        predictor.overlap = 0.0
    if runtime == "monai":
        from monai.inferers import SlidingWindowInferer

        net = predictor.models[0]
        inferer = SlidingWindowInferer(roi_size=plan.patch_size, sw_batch_size=plan.inference.batch_size,
                                       overlap=predictor.overlap, mode="gaussian")

        def run(image: Image) -> np.ndarray:
            x = torch.from_numpy(apply_normalization(image.array, plan))[None]
            with torch.no_grad():
                return inferer(x, net)[0].argmax(0).numpy().astype(np.uint8)
    else:
        def run(image: Image) -> np.ndarray:
            return predictor.predict(image).labels.array[0]

    if big:
        vol = np.random.default_rng(0).normal(0, 1, size=(1, 512, 512, 300)).astype(np.float32)
        t = time.perf_counter()
        run(Image(vol, np.eye(4)))
        return {"seconds": time.perf_counter() - t, "peak_rss_mib": _rss()}
    ids = json.loads((model / "split.json").read_text())["val"][:cases]
    images = [read_image(data / "hippocampus" / "images" / f"{c}.nii.gz") for c in ids]
    refs = [read_image(data / "hippocampus" / "labels" / f"{c}.nii.gz", kind="label").array[0] for c in ids]
    run(images[0])  # warm-up (OpenVINO compiles per shape, ONNX Runtime allocates)
    preds, seconds, cpu = _timed(run, images)
    dice = [np.mean(list(dice_per_label(p, r, (1, 2), both_empty=1.0).values()))
            for p, r in zip(preds, refs, strict=True)]
    return {"cases": len(ids), "seconds": seconds, "cases_per_s": len(ids) / seconds, "cpu_seconds": cpu,
            "dice_mean": float(np.mean(dice)),
            "dice_per_case": [float(d) for d in dice],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "options": {k: v for k, v in predictor.options().items() if k in ("runtime", "precision",
                                                                              "inference_precision_hint")}}


def classify(runtime: str, precision: str, model: Path, data: Path, cases: int) -> dict:
    """PneumoniaMNIST test images through one runtime: AUC of the positive class."""
    import torch

    from deepmia.image import Image
    from deepmia.metrics.classification import roc_auc
    from deepmia.tasks.classify.predict import Predictor

    predictor = Predictor(model, runtime=runtime, precision=None if runtime == "torch" else precision)
    torch.set_num_threads(THREADS)
    npz = np.load(data / "medmnist" / "pneumoniamnist.npz")
    n = min(cases, len(npz["test_images"]))
    # deepmia reads a picture with array axes (x = column, y = row): the npz rows are transposed, as a PNG read is
    images = [Image(a.T[None].astype(np.float32), np.eye(4), meta={"case_id": f"test_{i}"})
              for i, a in enumerate(npz["test_images"][:n])]
    y = npz["test_labels"][:n].ravel()
    predictor.predict_many(images[:64])
    batches = [images[i:i + 64] for i in range(0, n, 64)]
    outs, seconds, cpu = _timed(predictor.predict_many, batches)
    pos = predictor.plan.positive_index if predictor.plan.positive_index is not None else 1
    prob = np.array([r.probabilities[pos] for b in outs for r in b])
    return {"cases": n, "seconds": seconds, "cases_per_s": n / seconds, "cpu_seconds": cpu, "auc": roc_auc(y, prob),
            "probabilities": prob.tolist(), "peak_rss_mib": _rss()}


def detect(runtime: str, precision: str, model: Path, dataset: Path, cases: int) -> dict:
    """BCCD test images through one runtime: COCO mAP@[.5:.95] and mAP@.5."""
    import torch

    from deepmia.data.dataset import Dataset
    from deepmia.metrics.detection import coco_evaluate
    from deepmia.tasks.detect.predict import Predictor

    predictor = Predictor(model, runtime=runtime, precision=precision)
    torch.set_num_threads(THREADS)
    ds = Dataset.load(dataset, check_files=False)
    ids = list(ds.splits.test)[:cases]
    names = list(predictor.plan.class_names)
    images = [ds.read_image(c) for c in ids]
    truths = []
    for c in ids:
        kept = [b for b in ds.case(c).boxes or [] if not b.ignore]
        truths.append({"boxes": np.array([b.box for b in kept], float).reshape(-1, 4),
                       "labels": np.array([names.index(b.label) for b in kept], int)})
    predictor.predict(images[0])
    outs, seconds, cpu = _timed(predictor.predict, images)
    preds = [{"boxes": r.boxes, "scores": r.scores, "labels": r.labels} for r in outs]
    coco = coco_evaluate(preds, truths, class_names=dict(enumerate(names)))
    return {"cases": len(ids), "seconds": seconds, "cases_per_s": len(ids) / seconds, "cpu_seconds": cpu,
            "map": coco["map"],
            "map50": coco["map50"], "peak_rss_mib": _rss()}


def worker(args: argparse.Namespace) -> dict:
    """One runtime in this process (``--worker TASK RUNTIME PRECISION``)."""
    task, runtime, precision = args.worker
    paths = json.loads(args.paths)
    if task == "segment" or task == "big":
        return segment(runtime, precision, Path(paths["hippocampus"]), args.data, args.cases, task == "big")
    if task == "classify":
        return classify(runtime, precision, Path(paths["pneumoniamnist"]), args.data, 10**6)
    return detect(runtime, precision, Path(paths["bccd"]), Path(paths["bccd_ds"]), args.det_cases)


def start(args: argparse.Namespace, paths: dict, task: str, runtime: str, precision: str) -> tuple:
    """One runtime's worker process, started."""
    cmd = [sys.executable, __file__, "--data", str(args.data), "--cases", str(args.cases), "--det-cases",
           str(args.det_cases), "--paths", json.dumps(paths), "--worker", task, runtime, precision]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, runtime, precision, os.getloadavg()[0]


def finish(started: tuple) -> dict:
    """The worker's result (or its last error line)."""
    proc, runtime, precision, load = started
    out, err = proc.communicate()
    if proc.returncode:
        return {"runtime": runtime, "precision": precision, "error": err.strip().splitlines()[-1:]}
    row = {"runtime": runtime, "precision": precision, "load_before": load, "load_after": os.getloadavg()[0],
           **json.loads(out.strip().splitlines()[-1])}
    if "cpu_seconds" in row:
        row["cpu_ms_per_case"] = 1000 * row["cpu_seconds"] / row["cases"]
    return row


def child(args: argparse.Namespace, paths: dict, task: str, runtime: str, precision: str) -> dict:
    return finish(start(args, paths, task, runtime, precision))


def interleaved(args: argparse.Namespace, paths: dict, task: str, runtimes: list) -> list[dict]:
    """Every runtime ``args.rounds`` times, A B C ... A B C ...; per runtime the median cases/s over rounds."""
    if args.parallel:  # every runtime of a round at once: the other jobs' load falls on all of them alike
        rounds = [[finish(w) for w in [start(args, paths, task, rt, p) for rt, p in runtimes]]
                  for _ in range(args.rounds)]
    else:
        rounds = [[child(args, paths, task, rt, p) for rt, p in runtimes] for _ in range(args.rounds)]
    rows = []
    for i in range(len(runtimes)):
        runs = [r[i] for r in rounds if "error" not in r[i]]
        if not runs:
            rows.append(rounds[0][i])
            continue
        row = dict(runs[0])
        row["cases_per_s_rounds"] = [r["cases_per_s"] for r in runs]
        row["cases_per_s"] = statistics.median(row["cases_per_s_rounds"])
        row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
        row["cpu_ms_per_case"] = statistics.median(r["cpu_ms_per_case"] for r in runs)
        row["load_mean"] = float(np.mean([(r["load_before"] + r["load_after"]) / 2 for r in runs]))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deepmia_runtimes"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cases", type=int, default=52, help="Hippocampus validation cases (the split has 52).")
    parser.add_argument("--det-cases", type=int, default=72, help="BCCD test images (the split has 72).")
    parser.add_argument("--parallel", action="store_true",
                        help="Run a round's runtimes at the same time (on a busy machine), not one after another.")
    parser.add_argument("--big", action="store_true", help="Also the 512x512x300 volume (minutes per runtime).")
    parser.add_argument("--only", nargs="*", default=["segment", "classify", "detect"])
    parser.add_argument("--table", action="store_true", help="Only rewrite the markdown table from the JSON.")
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.table:
        write(json.loads((HERE / "results" / "inference_runtimes.json").read_text()))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    started, load0 = time.time(), os.getloadavg()[0]
    paths = prepare(args.work, args.data, args.only + (["segment"] if args.big else []))
    machine = f"{platform.machine()}, {os.cpu_count()}-core CPU ({_cpu()}), {THREADS} threads per runtime"
    result = {"machine": machine, "date": time.strftime("%Y-%m-%d", time.gmtime()), "load_average_1min_start": load0}
    for task, runtimes in [("segment", SEG), ("classify", CLS), ("detect", DET)]:
        if task in args.only:
            result[task] = interleaved(args, paths, task, _runnable(runtimes))
    if args.big:
        result["big"] = [child(args, paths, "big", rt, p) for rt, p in _runnable(BIG)]
    result["load_average_1min_end"] = os.getloadavg()[0]
    result["wall_s"] = time.time() - started
    previous = HERE / "results" / "inference_runtimes.json"  # tables not run now are kept from the last run
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    for run in old.get("runs", {}).values():  # runs recorded before the machine was kept per run
        run.setdefault("machine", f"{old.get('machine')} (CPU with native bf16: AMX)")
    runs = {**old.get("runs", {}), **{k: {"date": result["date"], "wall_s": result["wall_s"], "machine": machine,
                                          "load_average_1min": [load0, result["load_average_1min_end"]]}
                                      for k in ("segment", "classify", "detect", "big") if k in result}}
    write({**{k: old.get(k, []) for k in ("segment", "classify", "detect", "big")}, **result, "runs": runs})


def _ratio(rows: list[dict], base: dict) -> list[str]:
    """Speed vs ``base``: wall-clock cases/s ratio / CPU-time ratio."""
    return [f"{r['cases_per_s'] / base['cases_per_s']:.2f}x / {base['cpu_ms_per_case'] / r['cpu_ms_per_case']:.2f}x"
            if "error" not in r else "-" for r in rows]


def write(result: dict) -> None:
    """``results/inference_runtimes.json`` and the markdown table."""
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "inference_runtimes.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = markdown(result)
    (HERE / "results" / "inference_runtimes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _measured(result: dict, task: str) -> str:
    run = result.get("runs", {}).get(task, {})
    return f"measured {run.get('date', '?')} on {run.get('machine', result.get('machine'))}"


def markdown(result: dict) -> list[str]:
    seg = result["segment"]
    lines = [
        "### Portable inference: one network, seven runtimes",
        "",
        'Each table names the machine it was measured on. Each runtime in its own process; runtimes interleaved over '
        'rounds (A B C ... A B C ...; cases/s: the median of the rounds, each listed); mean 1-minute load average in '
        "the table (the 2 cores were shared with other engineers' jobs: above 2, every runtime ran slower than on an "
        'idle machine, the ratios less so). CPU ms/case: CPU time of the worker process (both threads) per case, '
        "which other jobs' load changes much less than wall-clock time. Commands: `python "
        'benchmarks/inference_runtimes.py --only segment` and `... --only detect --rounds 1` (runtimes one after '
        'another), `... --parallel --rounds 1 --only classify` (all runtimes of a round at once), `... --big --only` '
        '(the 512x512x300 volume).',
        "",
    ]
    if seg:
        base = next(r for r in seg if r["runtime"] == "monai")
        torch_row = next(r for r in seg if r["runtime"] == "torch")
        lines += [
            f"Segmentation, {base.get('cases', '?')} fold-0 validation volumes of hippocampus (`models/hippocampus` "
            "fold 0, whole cases, window = plan patch, overlap 0.5, no mirroring, no post-processing); "
            f"{_measured(result, 'segment')}:",
            "",
            "| runtime | precision | cases/s (rounds) | CPU ms/case | vs MONAI fp32 (wall / CPU) | mean Dice "
            "| Dice - torch | peak RSS MiB | load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r, ratio in zip(seg, _ratio(seg, base), strict=True):
            if "error" in r:
                lines.append(f"| {r['runtime']} | {r['precision']} | error: {r['error']} | | | | | | |")
                continue
            rounds = ", ".join(f"{v:.2f}" for v in r["cases_per_s_rounds"])
            lines.append(f"| {r['runtime'] if r['runtime'] != 'monai' else 'MONAI SlidingWindowInferer'} | "
                         f"{r['precision']} | {r['cases_per_s']:.2f} ({rounds}) | {r['cpu_ms_per_case']:.0f} | "
                         f"{ratio} | {r['dice_mean']:.4f} | "
                         f"{r['dice_mean'] - torch_row['dice_mean']:+.4f} | {r['peak_rss_mib']:.0f} | "
                         f"{r['load_mean']:.1f} |")
        lines.append("")
    for task, metric, title in [("classify", "auc", "PneumoniaMNIST test (AUC)"),
                                ("detect", "map", "BCCD test (COCO mAP@[.5:.95]; mAP@.5)")]:
        rows = result.get(task) or []
        if not rows:
            continue
        base = rows[0]
        lines += [f"{title}, {base.get('cases', '?')} images; {_measured(result, task)}:", "",
                  f"| runtime | precision | cases/s (rounds) | CPU ms/case | vs torch (wall / CPU) | {metric} "
                  "| peak RSS MiB | load |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r, ratio in zip(rows, _ratio(rows, base), strict=True):
            if "error" in r:
                lines.append(f"| {r['runtime']} | {r['precision']} | error: {r['error']} | | | | | |")
                continue
            value = f"{r[metric]:.4f}" + (f"; {r['map50']:.4f}" if task == "detect" else "")
            rounds = ", ".join(f"{v:.2f}" for v in r["cases_per_s_rounds"])
            lines.append(f"| {r['runtime']} | {r['precision']} | {r['cases_per_s']:.2f} ({rounds}) | "
                         f"{r['cpu_ms_per_case']:.1f} | {ratio} | "
                         f"{value} | "
                         f"{r['peak_rss_mib']:.0f} | {r['load_mean']:.1f} |")
        lines.append("")
    if result.get("big"):
        lines += [f"512x512x300 synthetic volume (overlap 0, no mirroring), one run each; {_measured(result, 'big')}:",
                  "", "| runtime | precision | seconds | "
                  "peak RSS MiB |", "|---|---|---:|---:|"]
        lines += [f"| {b['runtime']} | {b['precision']} | {b.get('seconds', float('nan')):.1f} | "
                  f"{b.get('peak_rss_mib', float('nan')):.0f} |" for b in result["big"]]
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
