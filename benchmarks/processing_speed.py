"""Speed of the ten most used processing steps: deepmia vs the library kernel called directly, MONAI and TorchIO.

Data: ../shared/data/ct_mr_examples/example_ct.nii.gz (122 x 101 x 112, 3 mm, int32 HU), converted to float32
once before timing so every contender starts from the same array. Each contender computes the same result
(same kernel, parameters converted to the same voxel units); MONAI runs its array transforms on a torch tensor
(MetaTensor with the affine where the transform needs geometry) and TorchIO its transforms on a ScalarImage.
Times are the median of ``--repeats`` samples, interleaved round-robin so load on the shared 2-core machine
hits every contender alike; one sample loops a contender for at least ``--sample-ms`` and keeps the per-call
mean, so a sub-millisecond step is timed in its steady state rather than by whichever contender last left the
allocator holding (or returning) a freed 5 MB buffer. In each round deepmia and the direct call run first (which
of the two first alternates), then MONAI and TorchIO, each followed by a 50 ms pause, so no contender runs while
torch's worker threads are still spinning (an earlier rotating order put deepmia after TorchIO in 3 of 4 rounds).
The direct call is the fastest library route found by measurement (OpenCV for Gaussian, window and z-score).
``overhead`` = deepmia / direct - 1;
``vs MONAI`` and ``vs TorchIO`` = their time / deepmia's (above 1: deepmia is faster); each ratio is the median over
rounds of the ratio within a round (paired samples), so a load swing between rounds cancels out.

Usage: python benchmarks/processing_speed.py [--data ../shared/data] [--repeats 7] [--sample-ms 50]
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

import numpy as np

HERE = Path(__file__).resolve().parent
PAUSE_S = 0.05  # after each MONAI/TorchIO sample: torch's spinning worker threads go idle before the next timing


def build_cases(image):
    """name -> dict(ours=callable, direct=callable, monai=callable|None, torchio=callable|None, note=str)."""
    import cv2
    import nibabel.orientations as nio
    import SimpleITK as sitk
    import torch
    import torchio as tio
    from monai.data import MetaTensor
    from monai.transforms import (
        CropForeground,
        GaussianSmooth,
        MedianSmooth,
        NormalizeIntensity,
        Orientation,
        Resize,
        ScaleIntensityRange,
        Spacing,
        SpatialPad,
    )
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from deepmia.io.sitk import to_sitk
    from deepmia.processing import filters, intensity, morphology, segmentation, spatial

    a = image.array[0]
    sp = image.spacing
    t = torch.from_numpy(image.array.copy())
    mt = MetaTensor(t.clone(), affine=torch.as_tensor(image.affine))
    subject = tio.ScalarImage(tensor=t.clone(), affine=image.affine)
    sig_vox = [3.0 / s for s in sp]
    fp3 = morphology.ellipsoid(6.0, sp)
    bone = segmentation.threshold(image, preset="bone")
    bone_a = bone.array[0].astype(bool)
    c, w = intensity.CT_WINDOWS["abdomen"]
    lo, hi = c - w / 2, c + w / 2
    extent = np.asarray(image.spatial_shape) * np.asarray(sp)
    new_shape = np.round(extent / 1.5).astype(int)

    def torch_zoom(arr, shape):  # the linear kernel deepmia uses (3-4x faster than SimpleITK's resampler here)
        out = torch.nn.functional.interpolate(
            torch.from_numpy(arr)[None, None], size=tuple(int(n) for n in shape), mode="trilinear", align_corners=False
        )
        return out[0, 0].numpy()

    def kernel1d(sigma):  # scipy.ndimage's Gaussian kernel (radius int(4 sigma + 0.5)), as deepmia builds it
        x = np.arange(-int(4.0 * sigma + 0.5), int(4.0 * sigma + 0.5) + 1)
        k = np.exp(-0.5 * (x / sigma) ** 2)
        return k / k.sum()

    ks = [kernel1d(s) for s in sig_vox]

    def direct_gaussian():  # OpenCV separable passes: 6x faster than scipy.ndimage.gaussian_filter here
        out = np.empty_like(a)
        for i in range(a.shape[0]):
            cv2.sepFilter2D(a[i], cv2.CV_32F, ks[2], ks[1], dst=out[i], borderType=cv2.BORDER_REPLICATE)
        flat = out.reshape(a.shape[0], -1)
        return cv2.sepFilter2D(flat, cv2.CV_32F, np.ones(1), ks[0], borderType=cv2.BORDER_REPLICATE)

    def direct_window():  # OpenCV: one scale-and-shift pass, two in-place clipping passes (faster than np.clip)
        flat = a.reshape(a.shape[0], -1)
        out = cv2.addWeighted(flat, 1 / (hi - lo), flat, 0.0, -lo / (hi - lo))
        cv2.threshold(out, 1.0, 0.0, cv2.THRESH_TRUNC, dst=out)
        return cv2.threshold(out, 0.0, 0.0, cv2.THRESH_TOZERO, dst=out)[1]

    def direct_zscore():  # OpenCV: both moments in one pass, then one scale-and-shift pass (NumPy: 1.5x slower)
        flat = a.reshape(a.shape[0], -1)
        m, s = cv2.meanStdDev(flat)
        return cv2.addWeighted(flat, 1 / s[0, 0], flat, 0.0, -m[0, 0] / s[0, 0])

    def direct_median():
        s = sitk.Median(to_sitk(image), [1, 1, 1])
        return sitk.GetArrayViewFromImage(s)

    def direct_crop():  # bounding box from per-axis any() projections (what MONAI does), then a copy
        fg = a > -500
        rest = fg.any(axis=0)
        x, y, z = (np.flatnonzero(p) for p in (fg.any(axis=(1, 2)), rest.any(axis=1), rest.any(axis=0)))
        return a[x[0] : x[-1] + 1, y[0] : y[-1] + 1, z[0] : z[-1] + 1].copy()

    def direct_pad():  # zeroed array plus one copy: the fastest numpy route (np.pad is 30% slower here)
        out = np.zeros((1,) + tuple(n + 16 for n in image.spatial_shape), image.dtype)
        out[:, 8:-8, 8:-8, 8:-8] = image.array
        return out

    def direct_reorient():
        tr = nio.ornt_transform(nio.io_orientation(image.affine), nio.axcodes2ornt(("L", "P", "S")))
        return np.ascontiguousarray(nio.apply_orientation(a, tr))

    return {
        "gaussian (sigma 3 mm)": dict(
            ours=lambda: filters.gaussian(image, sigma=3.0),
            direct=direct_gaussian,
            monai=lambda: GaussianSmooth(sigma=sig_vox)(t),
            torchio=lambda: tio.Blur(std=3.0)(subject),
        ),
        "median (radius 1)": dict(
            ours=lambda: filters.median(image, radius=1),
            direct=direct_median,
            monai=lambda: MedianSmooth(radius=1)(t),
            torchio=None,
        ),
        "mean (radius 1)": dict(
            ours=lambda: filters.mean(image, radius=1),
            direct=lambda: ndi.uniform_filter(a, 3, mode="nearest"),
            monai=None,
            torchio=None,
        ),
        "normalize zscore": dict(
            ours=lambda: intensity.normalize(image, method="zscore"),
            direct=direct_zscore,
            monai=lambda: NormalizeIntensity()(t),
            torchio=lambda: tio.ZNormalization()(subject),
        ),
        "window abdomen": dict(
            ours=lambda: intensity.window(image, preset="abdomen"),
            direct=direct_window,
            monai=lambda: ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True)(t),
            torchio=lambda: tio.Clamp(lo, hi)(subject),
        ),
        "resample to 1.5 mm": dict(
            ours=lambda: spatial.resample(image, spacing=1.5),
            direct=lambda: torch_zoom(a, new_shape),
            monai=lambda: Spacing(pixdim=(1.5, 1.5, 1.5), mode="bilinear")(mt),
            torchio=lambda: tio.Resample(1.5)(subject),
        ),
        "resize to 96^3": dict(
            ours=lambda: spatial.resize(image, shape=(96, 96, 96)),
            direct=lambda: torch_zoom(a, (96, 96, 96)),
            monai=lambda: Resize((96, 96, 96), mode="trilinear")(t),
            torchio=lambda: tio.Resize((96, 96, 96))(subject),
        ),
        "reorient to LPS": dict(
            ours=lambda: spatial.reorient(image, code="LPS"),
            direct=direct_reorient,
            monai=lambda: Orientation(axcodes="LPS")(mt),
            torchio=lambda: tio.ToOrientation("LPS")(subject),
        ),
        "crop_foreground (> -500 HU)": dict(
            ours=lambda: spatial.crop_foreground(image, threshold=-500),
            direct=direct_crop,
            monai=lambda: CropForeground(select_fn=lambda x: x > -500, margin=0)(t),
            torchio=None,
        ),
        "pad 8 voxels": dict(
            ours=lambda: spatial.pad(image, margin=8),
            direct=direct_pad,
            monai=lambda: SpatialPad([n + 16 for n in image.spatial_shape])(t),
            torchio=lambda: tio.Pad(8)(subject),
        ),
        "otsu": dict(
            ours=lambda: segmentation.otsu(image),
            direct=lambda: (a > threshold_otsu(a)).astype(np.uint8),
            monai=None,
            torchio=None,
        ),
        "dilate bone mask (6 mm)": dict(
            ours=lambda: morphology.dilate(bone, radius=6.0),
            direct=lambda: ndi.binary_dilation(bone_a, fp3),
            monai=None,
            torchio=None,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sample-ms", type=float, default=50.0, help="minimum duration of one timed sample")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from deepmia.io import read_image

    torch.set_num_threads(2)
    path = args.data / "ct_mr_examples" / "example_ct.nii.gz"
    raw = read_image(path)
    image = raw.with_array(raw.array.astype(np.float32))
    cases = build_cases(image)
    contenders = ("ours", "direct", "monai", "torchio")
    times = {name: {k: [] for k in contenders if case[k] is not None} for name, case in cases.items()}
    calls = {}  # calls per sample: a sample lasts >= --sample-ms, so sub-millisecond steps are timed in a loop
    for name, case in cases.items():  # warm-up (imports, caches) and calibration
        for k in times[name]:
            case[k]()
            t0 = time.perf_counter()
            case[k]()
            calls[name, k] = max(1, int(args.sample_ms / 1000 / max(time.perf_counter() - t0, 1e-6)))
    for rep in range(args.repeats):
        for name, case in cases.items():
            # torch's worker threads keep spinning for a while after a MONAI/TorchIO call and slow whatever runs
            # next on 2 cores: deepmia and direct go first (which of them first alternates) and every torch
            # sample is followed by a pause that lets its threads park, so no contender runs in their wake
            pair = ["ours", "direct"][:: 1 if rep % 2 else -1]
            others = [k for k in ("monai", "torchio") if k in times[name]][:: 1 if rep % 2 else -1]
            for k in pair + others:
                n = calls[name, k]
                t0 = time.perf_counter()
                for _ in range(n):
                    case[k]()
                times[name][k].append((time.perf_counter() - t0) / n)
                if k in others:
                    time.sleep(PAUSE_S)

    rows = []
    for name, ts in times.items():
        med = {k: statistics.median(v) for k, v in ts.items()}
        row = {"step": name, **{f"{k}_ms": 1000 * v for k, v in med.items()}}
        # ratios are medians of the per-round ratios: both samples of a round ran within a second of each
        # other, so a load swing on the shared machine moves both and cancels, unlike in a ratio of medians
        row["overhead"] = statistics.median(o / d for o, d in zip(ts["ours"], ts["direct"], strict=True)) - 1
        for other in ("monai", "torchio"):
            if other in med:
                row[f"{other}_over_ours"] = statistics.median(x / o for x, o in zip(ts[other], ts["ours"], strict=True))
        rows.append(row)

    out = {
        "benchmark": "processing_speed",
        "data": str(path.relative_to(args.data.parent.parent)) if args.data.is_absolute() else str(path),
        "shape": list(image.spatial_shape),
        "spacing_mm": list(image.spacing),
        "repeats": args.repeats,
        "sample_ms": args.sample_ms,
        "machine": f"{platform.processor() or platform.machine()}, 2-core CPU quota, torch threads 2",
        "rows": rows,
    }
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "processing_speed.json").write_text(json.dumps(out, indent=2) + "\n")

    def fmt(v, spec=None):  # times: 2 decimals below 10 ms, so sub-millisecond steps stay readable
        return "-" if v is None else (spec or ("{:.2f}" if v < 10 else "{:.1f}")).format(v)

    lines = [
        "### Processing steps: deepmia vs the direct kernel, MONAI and TorchIO",
        "",
        f"Data: example_ct.nii.gz ({' x '.join(map(str, image.spatial_shape))}, 3 mm, float32); median of "
        f"{args.repeats} interleaved samples, each looping one call for at least {args.sample_ms:g} ms "
        "(per-call mean); ratios: median over rounds of the within-round ratio; "
        "machine: 2-core CPU, shared. "
        f"Command: `python benchmarks/processing_speed.py --repeats {args.repeats}`.",
        "",
        "| step | deepmia ms | direct ms | overhead | MONAI ms | MONAI / deepmia | TorchIO ms | TorchIO / deepmia |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {fmt(r['ours_ms'])} | {fmt(r['direct_ms'])} | {100 * r['overhead']:+.0f}% | "
            f"{fmt(r.get('monai_ms'))} | {fmt(r.get('monai_over_ours'), '{:.2f}')} | "
            f"{fmt(r.get('torchio_ms'))} | {fmt(r.get('torchio_over_ours'), '{:.2f}')} |"
        )
    (res_dir / "processing_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"({os.cpu_count()} CPUs visible)")


if __name__ == "__main__":
    main()
