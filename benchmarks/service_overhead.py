"""Service overhead: the same hippocampus prediction through `deepmia predict --server` vs `deepmia predict` locally.

Both are timed as a user runs them, from the command line to the label map on disk: locally, `deepmia predict
hippocampus SERIES OUT`; through the service, `deepmia predict hippocampus SERIES OUT --server URL --token T`
(upload, queue, worker, download) against a running `deepmia serve` (SQLite, one worker). Runs alternate, the
ratio is of the medians; the label maps are checked equal.

Usage: python benchmarks/service_overhead.py [--data ../shared/data] [--repeats 3]
Writes benchmarks/results/service_overhead.json and service_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from service_load import start_server

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLI = [sys.executable, "-c", "from deepmia.cli.main import entry; entry()", "predict", "hippocampus"]


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    series = (args.data / "dicom" / "mr_study" / "Study3" / "11_HCropVolume").resolve()
    times: dict[str, list[float]] = {"cli": [], "server": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        proc, url, token = start_server(tmp, workers=1)
        try:
            timed([*CLI, str(series), str(tmp / "warm"), "--server", url, "--token", token])  # first upload
            for i in range(args.repeats):
                times["cli"].append(timed([*CLI, str(series), str(tmp / f"cli{i}")]))
                times["server"].append(timed([*CLI, str(series), str(tmp / f"srv{i}"), "--server", url,
                                              "--token", token]))
        finally:
            proc.terminate()
            proc.wait(30)
        local = np.asarray(nib.load(tmp / "cli0" / f"{series.name}.nii.gz").dataobj)
        remote = np.asarray(nib.load(next((tmp / "srv0").glob("series_*.nii.gz"))).dataobj)
        equal = bool(np.array_equal(local, remote))
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["server"] / median["cli"]
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "repeats": args.repeats, "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
              "median_s": {k: round(v, 2) for k, v in median.items()}, "ratio_server_over_cli": round(ratio, 3),
              "label_maps_equal": equal}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service_overhead.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "service_overhead.md").write_text(
        f"hippocampus (TTA on, CPU) on the mr_study HippoCrop DICOM series, {result['machine']}, {args.repeats} "
        f"alternating runs each, median wall time from the command line to the label map on disk.\n\n"
        "| how | seconds (median) | ratio |\n|---|---:|---:|\n"
        f"| `deepmia predict hippocampus SERIES OUT` | {median['cli']:.2f} | 1.00 |\n"
        f"| `deepmia predict hippocampus SERIES OUT --server URL --token T` (running `deepmia serve`, 1 worker) | "
        f"{median['server']:.2f} | {ratio:.2f} |\n\n"
        f"Label maps equal voxel for voxel: {'yes' if equal else 'NO'}. Both include a `deepmia` process start; "
        "the local run also imports torch and the model code, which the service's worker process did once, at its "
        "start (outside the timed runs): upload, queueing, polling and download cost less than that.\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
