"""Speed of reading DICOM series: deepmia.read_series vs SimpleITK's ImageSeriesReader (GDCM).

Both read the same series in one run, alternating, several repeats; the table reports medians and the ratio
SimpleITK time / deepmia time (above 1: deepmia is faster). SimpleITK is timed as a user would call it:
GetGDCMSeriesFileNames (header scan and sort) + Execute.

Usage: python benchmarks/dicom_read_speed.py [--data ../shared/data] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _series(data: Path) -> list[tuple[str, Path]]:
    out = [("ct_example (20 CT slices)", data / "ct_mr_examples/example_ct_dicom")]
    for folder in sorted({p.parent for p in (data / "dicom/mr_study").rglob("*.dcm")}):
        out.append((f"mr_study/{folder.name}", folder))
    return out


def _time_pair(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median times of two functions, run alternately so that load from other jobs hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((fn_a, times[0]), (fn_b, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import SimpleITK as sitk

    from deepmia.io.dicom import read_series

    def sitk_read(folder: Path):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sitk.GetArrayViewFromImage(reader.Execute())

    rows = []
    for name, folder in _series(args.data):
        n_files = sum(1 for p in folder.iterdir() if p.is_file())
        read_series(folder)  # warm the page cache and imports for both
        sitk_read(folder)
        ours, theirs = _time_pair(lambda f=folder: read_series(f), lambda f=folder: sitk_read(f), args.repeats)
        shape = list(read_series(folder).shape)
        rows.append({"series": name, "files": n_files, "shape": shape, "deepmia_s": round(ours, 4),
                     "simpleitk_s": round(theirs, 4), "speedup": round(theirs / ours, 2)})
        print(rows[-1])
    result = {"benchmark": "dicom_read_speed", "repeats": args.repeats, "machine": f"{os.cpu_count()}-core CPU, "
              f"{platform.machine()}", "python": platform.python_version(), "simpleitk": sitk.Version.VersionString(),
              "rows": rows}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "dicom_read_speed.json").write_text(json.dumps(result, indent=2))
    md = ["| series | files | deepmia (s) | SimpleITK (s) | SimpleITK/deepmia |", "|---|---|---|---|---|"]
    md += [f"| {r['series']} | {r['files']} | {r['deepmia_s']} | {r['simpleitk_s']} | {r['speedup']} |" for r in rows]
    md.append("")
    md.append(f"Median of {args.repeats} repeats, page cache warm, {result['machine']} (shared with other jobs). "
              "SimpleITK = GetGDCMSeriesFileNames + ImageSeriesReader.Execute. "
              "Command: `python benchmarks/dicom_read_speed.py`.")
    (out / "dicom_read_speed.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
