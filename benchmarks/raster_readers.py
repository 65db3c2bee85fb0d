"""Which library should decode PNG / JPEG / TIFF: speed and bit-depth correctness of Pillow, OpenCV, tifffile.

Reads the 20 DRIVE training TIFFs (LZW RGB), the same pictures as 8-bit PNG, the same scaled to 16-bit RGB
PNG, and 40 BCCD JPEGs, with each library and with ``deepmia.io.read_image``; records the median time per file
and whether the decoded pixels equal the written ones (a 16-bit PNG decoded to 8 bits counts as wrong).

Usage: python benchmarks/raster_readers.py [--data ../shared/data] [--repeats 3]
Writes benchmarks/results/raster_readers.json and raster_readers.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage

from deepmia.io import read_image

REPO = Path(__file__).resolve().parents[1]


def pillow(path: Path) -> np.ndarray:
    with PILImage.open(path) as pic:
        return np.asarray(pic)


def opencv(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return arr[..., ::-1] if arr.ndim == 3 else arr  # BGR -> RGB


def deepmia_read(path: Path) -> np.ndarray:
    return np.transpose(read_image(path).array, (2, 1, 0))  # (C, X, Y) -> (Y, X, C)


def timed(fn: Callable[[Path], np.ndarray], files: list[Path], truth: list[np.ndarray] | None, repeats: int):
    times, correct = [], True
    for _ in range(repeats):
        start = time.perf_counter()
        decoded = [fn(f) for f in files]
        times.append((time.perf_counter() - start) / len(files))
    if truth is not None:
        pairs = zip(decoded, truth, strict=True)
        correct = all(d.dtype == t.dtype and np.array_equal(d.reshape(t.shape), t) for d, t in pairs)
    return statistics.median(times) * 1000, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    tiffs = sorted((args.data / "drive" / "training" / "images").glob("*.tif"))
    jpegs = sorted((args.data / "bccd" / "BCCD" / "JPEGImages").glob("*.jpg"))[:40]
    truth8 = [tifffile.imread(f) for f in tiffs]
    truth16 = [t.astype(np.uint16) * 257 for t in truth8]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        png8, png16 = [], []
        for i, (t8, t16) in enumerate(zip(truth8, truth16, strict=True)):
            png8.append(Path(tmp) / f"{i}_8.png")
            png16.append(Path(tmp) / f"{i}_16.png")
            cv2.imwrite(str(png8[-1]), t8[..., ::-1])
            cv2.imwrite(str(png16[-1]), t16[..., ::-1])
        cases = [
            ("DRIVE TIFF, LZW RGB 8-bit", tiffs, truth8, {"tifffile": tifffile.imread, "Pillow": pillow,
                                                         "OpenCV": opencv, "deepmia": deepmia_read}),
            ("DRIVE as PNG, RGB 8-bit", png8, truth8, {"Pillow": pillow, "OpenCV": opencv, "deepmia": deepmia_read}),
            ("DRIVE as PNG, RGB 16-bit", png16, truth16, {"Pillow": pillow, "OpenCV": opencv, "deepmia": deepmia_read}),
            ("BCCD JPEG, RGB", jpegs, None, {"Pillow": pillow, "OpenCV": opencv, "deepmia": deepmia_read}),
        ]
        for name, files, truth, readers in cases:
            for lib, fn in readers.items():
                ms, ok = timed(fn, files, truth, args.repeats)
                rows.append({"files": name, "count": len(files), "reader": lib, "ms_per_file": round(ms, 2),
                             "pixels_exact": ok if truth is not None else None})
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, 2-core CPU"
    (out / "raster_readers.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = ["| files | n | reader | ms / file | pixels exact |", "|---|---|---|---|---|"]
    for r in rows:
        exact = "n/a (lossy)" if r["pixels_exact"] is None else ("yes" if r["pixels_exact"] else "**no**")
        lines.append(f"| {r['files']} | {r['count']} | {r['reader']} | {r['ms_per_file']} | {exact} |")
    (out / "raster_readers.md").write_text(
        f"Raster decoders on real data (`python benchmarks/raster_readers.py`), machine: {machine}, "
        f"median of {args.repeats} passes.\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
