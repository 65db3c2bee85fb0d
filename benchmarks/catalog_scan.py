"""Catalog scan speed: first scan and no-change rescan of a DICOM tree vs plain pydicom.dcmread of every file.

Usage: python benchmarks/catalog_scan.py [--data ../shared/data] [--workers N] [--repeats 3]
Writes benchmarks/results/catalog_scan.json and catalog_scan.md.
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

import pydicom

from deepmia.data.catalog import open_catalog, scan

REPO = Path(__file__).resolve().parents[1]


def plain_dcmread(files: list[Path]) -> int:
    ok = 0
    for path in files:
        try:
            pydicom.dcmread(path)
            ok += 1
        except Exception:  # noqa: BLE001 -- the tree holds non-DICOM and damaged files on purpose
            pass
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = (args.data / "dicom").resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())

    times = {"dcmread": [], "first_scan": [], "rescan": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        readable = plain_dcmread(files)
        times["dcmread"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp, open_catalog(Path(tmp) / "catalog.sqlite") as catalog:
            t = time.perf_counter()
            first = scan(catalog, root, workers=args.workers)
            times["first_scan"].append(time.perf_counter() - t)
            t = time.perf_counter()
            again = scan(catalog, root, workers=args.workers)
            times["rescan"].append(time.perf_counter() - t)
            assert again.read == 0
    median = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: len(files) / v for k, v in median.items()}
    result = {
        "data": str(root),
        "files": len(files),
        "dcmread_ok": readable,
        "indexed": first.added,
        "not_indexed": len(first.errors),
        "workers": args.workers,
        "repeats": args.repeats,
        "seconds_median": median,
        "files_per_second": rate,
        "speedup_vs_dcmread": {"first_scan": rate["first_scan"] / rate["dcmread"],
                               "rescan": rate["rescan"] / rate["dcmread"]},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), SQLite catalog",
        "pydicom": pydicom.__version__,
    }
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalog_scan.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [("plain `pydicom.dcmread` of every file", "dcmread"), ("`catalog scan`, first scan", "first_scan"),
            ("`catalog scan`, no-change rescan", "rescan")]
    md = [
        f"Catalog scan of `{root.name}/` ({len(files)} files: {first.added} indexed, {len(first.errors)} recorded as "
        f"not indexable), {args.workers} workers, SQLite, {args.repeats} repeats (median), "
        "2-core CPU shared with other jobs.",
        "",
        "| what | seconds | files/s | vs dcmread |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        md.append(f"| {label} | {median[key]:.3f} | {rate[key]:.0f} | {rate[key] / rate['dcmread']:.2f}x |")
    (out / "catalog_scan.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
