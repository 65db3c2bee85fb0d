"""Which DICOM series readers get the geometry right: deepmia vs dicom2nifti vs SimpleITK (naive).

On dicom2nifti's test series: a reader *matches* a ground truth when its volume, compared in world space (axis
order and flips accounted for through the affines), has every voxel centre within 0.01 mm of a ground-truth
voxel centre and equal values (float data: relative 1e-6). On the ``failing/`` series a reader *refuses* when it
raises. SimpleITK is used as most scripts use it: GetGDCMSeriesFileNames + ImageSeriesReader.Execute.

Usage: python benchmarks/dicom_series_compare.py [--data ../shared/data]
(needs ``pip install -c constraints.txt dicom2nifti``, a benchmark-only dependency)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FAILING = ["gantrytilting/001", "notavolume/001", "slicecount/001", "sliceincrement/001", "sliceincrement/002",
           "sliceorientation/001"]


def _deepmia(folder: Path):
    from deepmia.io.dicom import read_series

    img = read_series(folder)
    return img.array, img.affine


def _dicom2nifti(folder: Path):
    import dicom2nifti
    import nibabel as nib

    from deepmia.io.nifti import read as read_nifti

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.nii.gz"
        dicom2nifti.dicom_series_to_nifti(str(folder), str(out), reorient_nifti=False)
        nib.load(out)
        img = read_nifti(out)
        return np.array(img.array), img.affine


def _sitk(folder: Path):
    import SimpleITK as sitk

    from deepmia.io.sitk import from_sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    img = from_sitk(reader.Execute())
    return img.array, img.affine


READERS = {"deepmia": _deepmia, "dicom2nifti": _dicom2nifti, "simpleitk": _sitk}


def matches(arr: np.ndarray, affine: np.ndarray, ref) -> tuple[bool, str]:
    """World-space comparison with the ground truth Image ``ref``."""
    ref_arr = ref.array
    if arr.shape[0] == 3 and ref_arr.shape[0] == 4:
        ref_arr = ref_arr[:3]  # RGBA NIfTI
    if arr.ndim != 4 or arr.shape[0] != ref_arr.shape[0] or np.prod(arr.shape[1:]) != np.prod(ref.spatial_shape):
        return False, f"shape {list(arr.shape)} vs {list(ref_arr.shape)}"
    t = np.linalg.inv(ref.affine) @ affine
    r = np.round(t[:3, :3])
    idx = np.indices(arr.shape[1:]).reshape(3, -1)
    world_ref_idx = r @ idx + t[:3, 3:4]
    if not np.allclose(t[:3, :3], r, atol=1e-3):
        return False, "axes differ beyond order/flips"
    ref_idx = np.round(world_ref_idx).astype(int)
    err_mm = np.abs(ref.affine[:3, :3] @ (world_ref_idx - ref_idx)).max()
    if err_mm > 0.01 or ref_idx.min() < 0 or np.any(ref_idx.max(axis=1) >= np.array(ref.spatial_shape)):
        return False, f"grid off by up to {err_mm:.3f} mm or outside the ground truth"
    mapped = ref_arr[:, ref_idx[0], ref_idx[1], ref_idx[2]].reshape(arr.shape)
    same = np.allclose(arr.astype(np.float64), mapped.astype(np.float64), rtol=1e-6, atol=0)
    return bool(same), "" if same else "values differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    from deepmia.io.nifti import read as read_nifti

    root = args.data / "dicom/dicom2nifti"
    gts = sorted(p for p in root.rglob("*_ground_truth.nii.gz") if "failing" not in p.parts)
    rows = []
    for gt in gts:
        folder = Path(str(gt).replace("_ground_truth.nii.gz", ""))
        ref = read_nifti(gt)
        row = {"series": str(folder.relative_to(root))}
        for name, fn in READERS.items():
            try:
                arr, aff = fn(folder)
                ok, why = matches(arr, aff, ref)
            except Exception as exc:  # a reader's failure is a result here
                ok, why = False, f"raised {type(exc).__name__}: {str(exc)[:120]}"
            row[name] = ok
            row[f"{name}_note"] = why
        rows.append(row)
    refused = []
    for case in FAILING:
        row = {"series": f"failing/{case}"}
        for name, fn in READERS.items():
            try:
                fn(root / "failing" / case)
                row[name], row[f"{name}_note"] = False, "read without complaint"
            except Exception as exc:
                row[name], row[f"{name}_note"] = True, f"{type(exc).__name__}: {str(exc)[:160]}"
        refused.append(row)
    totals = {name: {"matched": sum(r[name] for r in rows), "of": len(rows),
                     "refused": sum(r[name] for r in refused), "of_failing": len(refused)} for name in READERS}
    result = {"benchmark": "dicom_series_compare", "machine": f"{os.cpu_count()}-core CPU", "totals": totals,
              "ground_truth": rows, "failing": refused}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "dicom_series_compare.json").write_text(json.dumps(result, indent=2))
    md = ["| reader | ground-truth series matched | failing series refused |", "|---|---|---|"]
    md += [f"| {n} | {t['matched']}/{t['of']} | {t['refused']}/{t['of_failing']} |" for n, t in totals.items()]
    md += ["", "| series | " + " | ".join(READERS) + " |", "|---|" + "---|" * len(READERS)]
    for r in rows + refused:
        md.append(f"| {r['series']} | " + " | ".join(("yes" if r[n] else "no") + (f" ({r[n + '_note']})"
                  if r[n + "_note"] and not r[n] else "") for n in READERS) + " |")
    md += ["", "Data: dicom2nifti test series (commit d68253e). A match: voxel centres within 0.01 mm of the ground "
           "truth's and equal values, in world space. 'failing' rows: yes = refused (raised). Command: "
           "`python benchmarks/dicom_series_compare.py`.",
           "", "siemens/fmri (a mosaic with reversed slice numbering, sSliceArray.ucImageNumbTra=1): deepmia puts "
           "the slices on the slab the protocol prescribes (sSliceArray.asSlice[*].sPosition, checked to 0.01 mm "
           "in tests/io/test_dicom_series.py, as dcm2niix reads it); dicom2nifti's ground truth has the same "
           "voxel order and axes but its origin 49 slices higher, so the two disagree on where the volume is."]
    (out / "dicom_series_compare.md").write_text("\n".join(md) + "\n")
    print(json.dumps(totals, indent=2))


if __name__ == "__main__":
    main()
