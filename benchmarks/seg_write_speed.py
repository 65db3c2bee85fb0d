"""DICOM SEG writing speed: deepmia's write_seg vs highdicom.seg.Segmentation called directly with its defaults.

The mask is a TotalSegmentator-style label map of 20 structures on a 512 x 512 x 300 grid: TotalSegmentator's own
multi-organ output for its example CT (``ct_mr_examples/example_seg.nii.gz``, 122 x 101 x 112 at 3 mm; a model
output, not ground truth) resampled by nearest neighbour onto the finer grid (same field of view, about
0.71 x 0.71 x 1.12 mm), keeping its 20 largest structures as labels 1..20. The source series is the example CT
(``example_ct.nii.gz``) resampled linearly onto the same grid and written as a 300-slice CT DICOM series with
deepmia's DICOM writer. Both writers get the same source headers (read once) and write a binary SEG with the same
20 coded segments; highdicom is timed as a user calls it: the label map arranged as one frame per source
instance, then ``Segmentation(...)`` with its defaults and ``save_as``. Reading back is ``highdicom.seg.segread``
plus the label map per source instance (``get_pixels_by_source_instance``, segments combined) for both files. The
two writers run alternately (ABBA order), ``--repeats`` times, after one untimed warm-up write (highdicom
loads its tables of the standard on first use); medians; ratio = highdicom seconds / deepmia seconds (>= 1: deepmia
is no slower).

Usage: python benchmarks/seg_write_speed.py [--data ../shared/data] [--repeats 5] [--slices 300] [--size 512]
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

import numpy as np

HERE = Path(__file__).resolve().parent
LABELS = 20


def _grid(data: Path, size: int, slices: int):
    """The CT and the 20-structure label map resampled onto a ``size`` x ``size`` x ``slices`` grid."""
    from deepmia.image import Image
    from deepmia.io import read_image
    from deepmia.processing.spatial import resize

    ct = read_image(data / "ct_mr_examples" / "example_ct.nii.gz")
    seg = read_image(data / "ct_mr_examples" / "example_seg.nii.gz", kind="label")
    counts = np.bincount(seg.array.ravel().astype(np.int64))
    counts[0] = 0
    keep = np.argsort(counts)[::-1][:LABELS]
    lut = np.zeros(counts.size, dtype=np.uint8)
    lut[keep] = np.arange(1, LABELS + 1)
    seg = seg.with_array(lut[seg.array.astype(np.int64)])
    shape = (size, size, slices)
    labels = resize(seg, shape=shape)
    ct_big = resize(ct, shape=shape)
    ct_big = Image(np.rint(ct_big.array).astype(np.int16), labels.affine, meta={"modality": "CT"})
    labels = Image(labels.array.astype(np.uint8), labels.affine, kind="label", meta={})
    return ct_big, labels


def _highdicom_write(labels_vol: np.ndarray, datasets: list, descriptions: list, path: Path) -> None:
    """highdicom called directly: one frame per source instance (rows, columns), default options."""
    import highdicom as hd

    frames = np.ascontiguousarray(np.transpose(labels_vol, (2, 1, 0)))  # (slices, rows = y, columns = x)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=100,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="bench", manufacturer_model_name="bench",
        software_versions="0", device_serial_number="0")
    seg.save_as(path)


def _read_back(path: Path, datasets: list) -> np.ndarray:
    import highdicom as hd

    seg = hd.seg.segread(path)
    return seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in datasets], combine_segments=True,
                                             skip_overlap_checks=True)


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-save", action="store_true", help="print, do not write benchmarks/results/")
    parser.add_argument("--table-only", action="store_true", help="rewrite the .md table from the saved JSON")
    args = parser.parse_args()
    if args.table_only:
        _write_table(json.loads((HERE / "results" / "seg_write_speed.json").read_text()))
        return
    import pydicom

    from deepmia.io.dicom.writer import write_series
    from deepmia.report.dicom import _segment_descriptions, load_codes, write_seg
    from deepmia.tasks.segment.result import SegmentResult

    ct, labels = _grid(args.data, args.size, args.slices)
    names = {k: f"structure_{k:02d}" for k in range(1, LABELS + 1)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_series(ct, tmp / "ct", series_description="synthetic CT", series_number=2)
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        labels.meta.update(format="dicom", source=str(tmp / "ct"), series_uid=datasets[0].SeriesInstanceUID)
        result = SegmentResult(labels, names)
        descriptions = _segment_descriptions(list(names.values()), load_codes(), "bench")
        vol = labels.array[0]
        times: dict[str, list[float]] = {k: [] for k in ("deepmia_write", "highdicom_write", "deepmia_read",
                                                         "highdicom_read")}
        # warm-up (not timed): highdicom loads its tables of the standard on first use, whoever calls it first
        _highdicom_write(vol[:, :, :2], datasets[:2], descriptions, tmp / "warm.dcm")
        writers = {"deepmia": lambda: write_seg(result, datasets, tmp / "deepmia.dcm", model_name="bench"),
                   "highdicom": lambda: _highdicom_write(vol, datasets, descriptions, tmp / "highdicom.dcm")}
        read: dict[str, object] = {}
        for n in range(args.repeats):
            order = ("deepmia", "highdicom") if n % 2 == 0 else ("highdicom", "deepmia")  # ABBA: drift cancels
            for name in order:
                times[f"{name}_write"].append(_timed(writers[name])[0])
            for name in order:
                t, read[name] = _timed(lambda name=name: _read_back(tmp / f"{name}.dcm", datasets))
                times[f"{name}_read"].append(t)
        own, theirs = read["deepmia"], read["highdicom"]
        expected = np.transpose(vol, (2, 1, 0))
        equal = bool(np.array_equal(own, expected)) and bool(np.array_equal(theirs, expected))
        sizes = {k: os.path.getsize(tmp / f"{k}.dcm") for k in ("deepmia", "highdicom")}
        frames = {k: int(pydicom.dcmread(tmp / f"{k}.dcm", stop_before_pixels=True).NumberOfFrames)
                  for k in ("deepmia", "highdicom")}
    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    out = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared)", "grid": [args.size, args.size, args.slices], "labels": LABELS,
        "voxels_labelled": int((vol > 0).sum()), "repeats": args.repeats, "median_seconds": med, "times": times,
        "file_bytes": sizes, "frames": frames, "read_back_equal": equal,
        "ratio_write": round(med["highdicom_write"] / med["deepmia_write"], 3),
        "ratio_read": round(med["highdicom_read"] / med["deepmia_read"], 3),
    }
    print(json.dumps(out, indent=1))
    if args.no_save:
        return
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "seg_write_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    _write_table(out)


def _write_table(out: dict) -> None:
    """``results/seg_write_speed.md`` from the measured numbers."""
    med, sizes, frames = out["median_seconds"], out["file_bytes"], out["frames"]
    size, _, slices = out["grid"]
    md = [f"{out['machine']}; {size} x {size} x {slices} label map, {out['labels']} labels "
          f"({out['voxels_labelled']} labelled voxels), medians of {out['repeats']} alternating runs (ABBA). "
          "Ratio = highdicom / deepmia (>= 1: deepmia no slower).", "",
          "| writer | write s | read back s | file MB | frames |", "|---|---|---|---|---|"]
    for k in ("deepmia", "highdicom"):
        label = "deepmia write_seg" if k == "deepmia" else "highdicom.seg.Segmentation (defaults)"
        md.append(f"| {label} | {med[k + '_write']} | {med[k + '_read']} | {sizes[k] / 1e6:.1f} | {frames[k]} |")
    every = out["labels"] * slices
    md += ["", f"Write ratio {out['ratio_write']}, read-back ratio {out['ratio_read']}; both read back equal to the "
           f"label map: {out['read_back_equal']}. Both files hold the same frames and differ only in UIDs and "
           "descriptions, so the read-back ratio shows the run-to-run noise of this shared machine. Before this "
           f"benchmark deepmia wrote every frame ({every} instead of {frames['deepmia']})."]
    (HERE / "results" / "seg_write_speed.md").write_text("\n".join(md) + "\n")

if __name__ == "__main__":
    main()
