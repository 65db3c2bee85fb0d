"""Batch inference throughput: the plain loop of deepmia predict vs deepmia batch predict on a local pool and on Ray
(1 and 2 workers), outputs checked identical, and a run whose Ray worker node is killed (kill -9 of its raylet).

Usage: python benchmarks/batch_ray.py [--data ../shared/data] [--cases 624] [--repeats 2]
       python benchmarks/batch_ray.py --model hippocampus --cases 48 --repeats 1 --runs loop,pool_2,ray_2 --no-kill
Writes benchmarks/results/batch_ray.json and batch_ray.md (batch_ray_hippocampus.* for the hippocampus run). Cases:
PneumoniaMNIST test images written as PNG files (624), or hippocampus MR volumes (links to the .nii.gz files,
repeated under new names when more cases than files are asked for); the Ray cluster is started the way users start
one (``ray start --head`` + one ``ray start --address`` worker node process, one CPU each). Runs are interleaved
(every configuration once per round) and the machine's load average is recorded with each, since it is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TABLES = ("predictions.csv", "measurements.csv")
THREADS = 1  # every worker (and the loop) on one torch thread
CHUNKS = {"pneumoniamnist": 64, "hippocampus": 4}  # cases per chunk: the loop's batch of 64 images; 4 volumes
CHUNK = CHUNKS["pneumoniamnist"]


def write_pngs(npz: Path, dst: Path, n: int) -> Path:
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    images = np.load(npz)["test_images"]
    for i in range(n):
        Image.fromarray(images[i % len(images)]).save(dst / f"case_{i:05d}.png")
    return dst


def link_volumes(folder: Path, dst: Path, n: int) -> Path:
    """``n`` cases linking to the hippocampus volumes in ``folder`` (repeated under new names past the last one)."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(folder.glob("*.nii.gz"))
    for i in range(n):
        (dst / f"case_{i:05d}.nii.gz").symlink_to(files[i % len(files)])
    return dst


def steady(stamps: list[float], chunk: int) -> float:
    """Cases per second between the end of the first chunk and the last case (start-up excluded)."""
    stamps = sorted(stamps)
    k = min(chunk, len(stamps) - 1)
    return (len(stamps) - k) / max(1e-9, stamps[-1] - stamps[k - 1])


def sequential(model: str, src: Path, out: Path) -> dict[str, Any]:
    """The loop of ``deepmia predict`` (run_batch) in this process, 1 torch thread; stamps after each chunk."""
    import torch

    from deepmia.engine.batch import run_batch
    from deepmia.tasks import load_predictor

    t0 = time.time()
    predictor = load_predictor(model)
    torch.set_num_threads(THREADS)  # after loading: the segmentation predictor sets every core
    stamps: list[float] = []
    report = run_batch(predictor, src, out, progress=lambda d, _t, _n: stamps.extend([time.time()] * (d - len(stamps))))
    return {"startup_s": round(stamps[0] - t0, 3), "total_s": round(time.time() - t0, 3),
            "cases": len(report.predicted), "cases_per_s": round(steady(stamps, CHUNK), 4)}


def batch(model: str, src: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    """``batch_predict`` with 1 torch thread per worker and chunks of 64; throughput from the manifest's stamps."""
    from deepmia.distributed import MANIFEST, batch_predict
    from deepmia.distributed.manifest import STATE_DIR

    t0 = time.time()
    outcome = batch_predict(model, src, out, threads=THREADS, chunk=CHUNK, **kwargs)
    stamps = [json.loads(x)["finished_at"] for x in (out / MANIFEST).read_text().splitlines()]
    t = outcome.timings
    marks = (out / STATE_DIR / "attempts").glob("*@w*")  # Ray's write tasks mark each case with their process
    return {"startup_s": round(min(stamps) - t0, 3), "connect_s": t["connect_s"], "total_s": t["total_s"],
            "cases": t["cases"], "cases_per_s": round(steady(stamps, CHUNK), 4), "retried": len(outcome.retried),
            "write_task_processes": len({m.read_text() for m in marks}) or None}


def identical(out: Path, reference: Path) -> bool:
    """The same tables and label maps as the loop wrote, byte for byte."""
    names = [t for t in TABLES if (reference / t).exists()] + sorted(p.name for p in reference.glob("*.nii.gz"))
    return bool(names) and all((out / n).is_file() and (out / n).read_bytes() == (reference / n).read_bytes()
                               for n in names)


def _on_node(pid: int, raylet: int) -> bool:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == raylet
    except (OSError, ValueError, IndexError):
        return False


def kill_run(model: str, src: Path, out: Path, reference: Path) -> dict[str, Any]:
    """Ray, 2 workers, on a fresh cluster; the worker node's raylet is killed (SIGKILL) the first time its model
    actor is seen predicting (an attempt mark of that actor without a write mark)."""
    import threading

    from deepmia.distributed import MANIFEST
    from deepmia.distributed.cluster import LocalCluster
    from deepmia.distributed.manifest import STATE_DIR

    marks = out / STATE_DIR / "attempts"
    with LocalCluster(worker_nodes=1, cpus=1, object_store_mb=300) as cluster:
        killed: dict[str, Any] = {}

        def in_flight() -> list[str]:
            found = []
            for mark in marks.glob("*@p*") if marks.is_dir() else []:
                case = mark.name.split("@")[0]
                try:
                    pid = int(mark.read_text().rsplit(":", 1)[1])
                except (OSError, ValueError, IndexError):
                    continue
                if _on_node(pid, cluster.raylets[1]) and not (marks / f"{case}@w1").exists():
                    found.append(case)
            return found

        def killer() -> None:
            while not killed:
                lines = (out / MANIFEST).read_text().count("\n") if (out / MANIFEST).exists() else 0
                taken = in_flight()
                if taken:
                    killed["pid"] = cluster.kill_worker_node()
                    killed["after_cases"], killed["in_flight"] = lines, len(taken)
                time.sleep(0.02)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        result = batch(model, src, out, ray=cluster.address, workers=2)
        killed.setdefault("pid", None)
        records = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
        names = [r["case"] for r in records]
        import ray

        ray.shutdown()
    return {**result, "killed_raylet_after_cases": killed.get("after_cases"),
            "in_flight_on_killed_node": killed.get("in_flight"), "manifest_lines": len(records),
            "unique_cases": len(set(names)), "retried_cases": sorted(r["case"] for r in records if r["retried"]),
            "identical_to_loop": identical(out, reference)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cases", type=int, default=624)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--kill-only", action="store_true", help="Redo only the kill run (into the existing JSON).")
    parser.add_argument("--model", choices=sorted(CHUNKS), default="pneumoniamnist")
    parser.add_argument("--runs", default="loop,pool_1,pool_2,ray_1,ray_2", help="Configurations, comma-separated.")
    parser.add_argument("--no-kill", action="store_true", help="Skip the run whose worker node is killed.")
    args = parser.parse_args()
    global CHUNK
    model, CHUNK = args.model, CHUNKS[args.model]
    tmp = Path(tempfile.mkdtemp(prefix="batchbench"))
    if model == "hippocampus":
        src = link_volumes(args.data / "hippocampus" / "images", tmp / "cases", args.cases)
    else:
        src = write_pngs(args.data / "medmnist" / "pneumoniamnist.npz", tmp / "cases", args.cases)
    out_dir = REPO / "benchmarks" / "results"
    stem = "batch_ray" if model == "pneumoniamnist" else f"batch_ray_{model}"
    if args.kill_only:
        result = json.loads((out_dir / f"{stem}.json").read_text())
        sequential(model, src, tmp / "loop_0")
        result["kill_run"] = kill_run(model, src, tmp / "killed", tmp / "loop_0")
        result["kill_run"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out_dir / f"{stem}.md").write_text(markdown(result))
        return
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in args.runs.split(",")}
    from deepmia.distributed.cluster import LocalCluster

    cluster = LocalCluster(worker_nodes=1, cpus=1, object_store_mb=300).start()
    cluster_s = cluster.startup_s
    try:
        for r in range(args.repeats):
            for name in runs:
                out = tmp / f"{name}_{r}"
                load = os.getloadavg()[0]
                if name == "loop":
                    res = sequential(model, src, out)
                elif name.startswith("pool"):
                    res = batch(model, src, out, workers=int(name[-1]))
                else:
                    res = batch(model, src, out, ray=cluster.address, workers=int(name[-1]))
                res |= {"load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
                if name != "loop":
                    res["identical_to_loop"] = identical(out, tmp / "loop_0")
                runs[name].append(res)
                print(name, r, res, flush=True)
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
    killed = None if args.no_kill else kill_run(model, src, tmp / "killed", tmp / "loop_0")
    print("kill", killed, flush=True)
    median = {k: statistics.median(x["cases_per_s"] for x in v) for k, v in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.platform(),
        "cpus": os.cpu_count(), "cpu": _cpu_name(), "cases": args.cases, "model": model, "chunk": CHUNK,
        "ray_cluster_start_s": round(cluster_s, 2), "workers_per_cpu": cluster.worker_limit // cluster.cpus,
        "runs": runs, "median_cases_per_s": median,
        "speedup_vs_loop": {k: round(v / median["loop"], 2) for k, v in median.items()},
        "kill_run": killed,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(result))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown(r: dict[str, Any]) -> str:
    what = {"pneumoniamnist": "PneumoniaMNIST test images as PNG, shipped `pneumoniamnist` classifier",
            "hippocampus": "hippocampus MR volumes (.nii.gz, the dataset's images repeated under new names), shipped "
                           "`hippocampus` segmentation model (sliding window, mirrored TTA, fp32)"}[r["model"]]
    lines = [
        f"{r['cases']} {what}; {r['cpus']} CPUs ({r.get('cpu', 'cpu not recorded')}) shared "
        f"with other users (load average before/after each run listed). One torch thread per worker and in the "
        f"loop, chunks of {r.get('chunk', 64)} cases. Throughput: cases per second from the end of the first "
        f"chunk to the last case (by the manifest's time stamps); start-up: from the call to the first finished "
        f"case (process spawn or "
        f"actor start, model loading, the first chunk); median of "
        f"{len(r['runs']['loop'])} interleaved rounds. Ray cluster (`ray start --head` + one worker node, 1 CPU "
        f"each{', ' + str(r['workers_per_cpu']) + ' worker processes kept per CPU' if r.get('workers_per_cpu') else ''}"
        f") started in {r['ray_cluster_start_s']} s, not counted. Write-task processes: distinct processes that ran "
        f"Ray's write tasks (from the attempt marks).",
        "",
        "| run | cases/s | x loop | start-up s | whole run s | outputs identical | write-task processes "
        "| load before/after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in r["runs"].items():
        start = statistics.median(x["startup_s"] for x in runs)
        same = all(x.get("identical_to_loop", True) for x in runs)
        loads = ", ".join(f"{x['load_before']}/{x['load_after']}" for x in runs)
        total = statistics.median(x["total_s"] for x in runs)
        procs = ", ".join(str(x["write_task_processes"]) for x in runs if x.get("write_task_processes")) or "-"
        lines.append(f"| {name} | {r['median_cases_per_s'][name]:.3g} | {r['speedup_vs_loop'][name]:.2f} | "
                     f"{start:.1f} | {total:.1f} | {'yes' if same else 'NO'} | {procs} | {loads} |")
    k = r["kill_run"]
    if k is None:
        return "\n".join([*lines, ""])
    lines += ["", f"Kill run (Ray, 2 workers, worker node's raylet killed with SIGKILL after "
                  f"{k['killed_raylet_after_cases']} cases, its actor predicting {k.get('in_flight_on_killed_node')} "
                  f"cases): {k['manifest_lines']} manifest lines for "
                  f"{k['unique_cases']} distinct cases, {len(k['retried_cases'])} marked retried, outputs identical "
                  f"to the loop: {'yes' if k['identical_to_loop'] else 'NO'}; {k['cases_per_s']:.1f} cases/s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
