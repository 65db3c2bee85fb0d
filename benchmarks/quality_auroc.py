"""Does ``deepmia quality`` separate clean images from degraded copies? AUROC per degradation type.

Data (real images from ../shared/data): MSD hippocampus MRI crops (3D, uint8), the CT and MR volumes of
ct_mr_examples (3D), and DRIVE fundus photographs (2D, green channel). For every clean image the script makes
one degraded copy per type, with a seeded random strength inside a stated range:

* ``gaussian_noise``: additive N(0, s), s = 8-15% of the foreground-background contrast
* ``rician_noise``: magnitude of complex Gaussian noise, s = 8-15% of that contrast
* ``blur``: Gaussian blur, sigma 1.2-2.0 voxels
* ``ghosting``: a copy shifted by half the field of view along a random axis, amplitude 0.15-0.3
* ``bias_field``: multiplicative smooth field exp(linear + quadratic), p95/p5 ratio about 1.6-2.2 over the FOV;
  the report counts copies whose field undoes the image's own shading (correlation with its N4 field < -0.5)
  and gives the ceiling: the AUROC a perfect field estimate would reach, scoring each copy by the coefficient
  of variation of the field it truly carries (the clean image's own N4 field times the synthetic field)
* ``clipping``: intensities clipped at the 85-95th percentile of the foreground

For each type the measure that should react (snr, snr, sharpness, ghosting, bias_field_cv,
clipping_fraction) is computed by ``deepmia.quality.assess`` on the clean and the degraded images, and the
AUROC of that score separating clean (0) from degraded (1) is reported, pooled over all datasets and per dataset.

Usage: python benchmarks/quality_auroc.py [--data ../shared/data] [--hippocampus 24] [--drive 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# degradation -> (measure, True when a higher value means degraded)
RELEVANT = {
    "gaussian_noise": ("snr", False),
    "rician_noise": ("snr", False),
    "blur": ("sharpness", False),
    "ghosting": ("ghosting", True),
    "bias_field": ("bias_field_cv", True),
    "clipping": ("clipping_fraction", True),
}


def load_images(data: Path, n_hippo: int, n_drive: int):
    """Yield (dataset, name, Image) for the clean images."""
    from deepmia.image import Image
    from deepmia.io import read_image

    hippo = sorted((data / "hippocampus" / "images").glob("*.nii.gz"))[:n_hippo]
    for p in hippo:
        yield "hippocampus", p.name, read_image(p)
    ct = data / "ct_mr_examples"
    for name in ("example_ct.nii.gz", "example_ct_sm.nii.gz", "example_mr_sm.nii.gz"):
        if (ct / name).exists():
            yield "ct_mr_examples", name, read_image(ct / name)
    drive = sorted((data / "drive" / "training" / "images").glob("*.tif"))[:n_drive]
    for p in drive:
        img = read_image(p)
        green = img.array[1:2] if img.num_channels == 3 else img.array[:1]
        yield "drive", p.name, Image(green.astype(np.float32), img.affine, meta=img.meta)


LAST_FIELD: dict[str, np.ndarray] = {}  # the log of the last synthetic bias field, for the cancellation check


def own_shading(clean, log_field: np.ndarray) -> dict[str, float]:
    """How the synthetic log field meets the clean image's own N4 field, inside the clean foreground.

    ``field_corr_own``: correlation of the two log fields. Strongly negative (below -0.5): the added field undoes
    the image's own shading (a fundus photograph's illumination gradient), so the "degraded" copy is flatter than
    the clean one and no no-reference measure can call it more biased. ``true_field_cv``: coefficient of variation
    of the field the copy truly carries (own field times synthetic field), what a perfect estimate would report;
    the clean image's own field is what the measure reports on it, so these give the ceiling of any field-spread
    measure.
    """
    from deepmia.quality import foreground_mask
    from deepmia.quality.measures import n4_field

    fg = foreground_mask(clean.array[0].astype(np.float64), clean.spacing)
    own, _ = n4_field(clean, fg)
    true_field = own[fg] * np.exp(log_field[fg])
    return {
        "field_corr_own": float(np.corrcoef(np.log(own[fg]), log_field[fg])[0, 1]),
        "true_field_cv": float(true_field.std() / true_field.mean()),
    }


def degrade(kind: str, image, rng: np.random.Generator):
    """A degraded copy of ``image`` (first channel, float32) and the strength used."""
    from deepmia.processing.filters import gaussian_array
    from deepmia.quality import foreground_mask

    a = image.array[0].astype(np.float64)
    fg = foreground_mask(a, image.spacing)
    mu = abs(float(a[fg].mean()) - (float(a[~fg].mean()) if (~fg).any() else 0.0))
    if kind in ("gaussian_noise", "rician_noise"):
        s = rng.uniform(0.08, 0.15) * mu
        if kind == "gaussian_noise":
            out = a + rng.normal(0, s, a.shape)
        else:
            out = np.sqrt((a + rng.normal(0, s, a.shape)) ** 2 + rng.normal(0, s, a.shape) ** 2)
        strength = s / mu
    elif kind == "blur":
        strength = rng.uniform(1.2, 2.0)
        out = gaussian_array(a, strength * min(image.spacing), image.spacing)
    elif kind == "ghosting":
        axis = int(rng.integers(0, a.ndim if a.ndim == 2 else 2))
        strength = rng.uniform(0.15, 0.3)
        out = a + strength * np.roll(a, a.shape[axis] // 2, axis=axis)
    elif kind == "bias_field":
        grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in a.shape], indexing="ij")
        direction = rng.normal(size=a.ndim)
        direction /= np.linalg.norm(direction)
        lin = sum(d * g for d, g in zip(direction, grids, strict=True))
        quad = sum(g**2 for g in grids) / a.ndim
        strength = rng.uniform(0.25, 0.4)
        log_field = strength * lin + 0.5 * strength * (quad - quad.mean())
        LAST_FIELD["log"] = log_field
        out = (a - a.min()) * np.exp(log_field) + a.min()
    elif kind == "clipping":
        strength = rng.uniform(85, 95)
        out = np.minimum(a, np.percentile(a[fg], strength))
    else:
        raise ValueError(kind)
    return image.with_array(out[None].astype(np.float32)), float(strength)


def auroc(clean: list[float], degraded: list[float], higher_is_degraded: bool) -> float:
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(clean + degraded, dtype=float)
    scores = np.nan_to_num(scores, nan=0.0, posinf=1e12, neginf=-1e12)
    y = np.r_[np.zeros(len(clean)), np.ones(len(degraded))]
    return float(roc_auc_score(y, scores if higher_is_degraded else -scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--hippocampus", type=int, default=24)
    parser.add_argument("--drive", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from deepmia.quality import THRESHOLDS, assess

    rng = np.random.default_rng(args.seed)
    rows = []
    t0 = time.perf_counter()
    for dataset, name, image in load_images(args.data, args.hippocampus, args.drive):
        clean = image.with_array(image.array[:1].astype(np.float32))
        report = assess(clean)
        base = {m.name: m.value for m in report.measures}
        rows.append({"dataset": dataset, "image": name, "degradation": "clean", "strength": 0.0, **base})
        for kind, (measure, _) in RELEVANT.items():
            bad, strength = degrade(kind, clean, rng)
            r = assess(bad, bias=measure == "bias_field_cv")
            extra = own_shading(clean, LAST_FIELD["log"]) if kind == "bias_field" else {}
            rows.append(
                {
                    "dataset": dataset,
                    "image": name,
                    "degradation": kind,
                    "strength": strength,
                    **{m.name: m.value for m in r.measures},
                    **extra,
                }
            )
        print(f"{dataset:15s} {name:28s} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    elapsed = time.perf_counter() - t0

    datasets = sorted({r["dataset"] for r in rows})
    results = {}
    for kind, (measure, higher) in RELEVANT.items():
        entry = {"measure": measure, "higher_is_degraded": higher}
        for scope in ["all", *datasets]:
            sel = [r for r in rows if scope in ("all", r["dataset"])]
            clean = [r[measure] for r in sel if r["degradation"] == "clean"]
            bad = [r[measure] for r in sel if r["degradation"] == kind]
            entry[scope] = {"auroc": auroc(clean, bad, higher), "n_clean": len(clean), "n_degraded": len(bad)}
        # flag agreement with the default thresholds: clean images pass, degraded copies get warn or fail
        t = THRESHOLDS[measure]
        clean_all = [r[measure] for r in rows if r["degradation"] == "clean"]
        bad_all = [r[measure] for r in rows if r["degradation"] == kind]
        if kind == "bias_field":  # cancelling copies and the perfect-estimate ceiling (see own_shading)
            for scope in ["all", *datasets]:
                sel = [r for r in rows if scope in ("all", r["dataset"])]
                copies = [r for r in sel if r["degradation"] == kind]
                entry[scope]["n_cancelling"] = int(sum(r["field_corr_own"] < -0.5 for r in copies))
                own = [r[measure] for r in sel if r["degradation"] == "clean"]
                entry[scope]["ceiling_auroc"] = auroc(own, [r["true_field_cv"] for r in copies], True)
        entry["clean_pass_rate"] = float(np.mean([t.status(v) == "pass" for v in clean_all]))
        entry["degraded_flag_rate"] = float(np.mean([t.status(v) != "pass" for v in bad_all]))
        results[kind] = entry

    out = {
        "benchmark": "quality_auroc",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible (2-core CPU quota)",
        "data": {d: sum(1 for r in rows if r["dataset"] == d and r["degradation"] == "clean") for d in datasets},
        "seconds": elapsed,
        "results": results,
        "rows": rows,
    }
    res_dir = HERE / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "quality_auroc.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
    lines = [
        "### Image quality: clean vs degraded copies (AUROC of the relevant measure)",
        "",
        f"Data: {', '.join(f'{d} ({n} images)' for d, n in out['data'].items())}; one degraded copy per image and "
        f"type; machine: 2-core CPU; {elapsed:.0f} s in all. Command: `python benchmarks/quality_auroc.py`.",
        "",
        "| degradation | measure | AUROC all | " + " | ".join(datasets) + " | clean pass | degraded flagged |",
        "|---|---|---|" + "---|" * len(datasets) + "---|---|",
    ]
    for kind, e in results.items():
        lines.append(
            f"| {kind} | {e['measure']} | {e['all']['auroc']:.3f} | "
            + " | ".join(f"{e[d]['auroc']:.3f}" for d in datasets)
            + f" | {e['clean_pass_rate']:.0%} | {e['degraded_flag_rate']:.0%} |"
        )
    bias = results["bias_field"]
    lines += [
        "",
        "bias_field copies whose synthetic field correlates below -0.5 with the clean image's own N4 field (the "
        "added field undoes the image's shading, so the copy is flatter than the original): "
        + ", ".join(f"{d} {bias[d]['n_cancelling']}/{bias[d]['n_degraded']}" for d in datasets)
        + ". Ceiling (AUROC if the measure knew the field each copy truly carries, own N4 field times synthetic "
        "field): " + ", ".join(f"{s} {bias[s]['ceiling_auroc']:.3f}" for s in ["all", *datasets]) + ".",
    ]
    (res_dir / "quality_auroc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
