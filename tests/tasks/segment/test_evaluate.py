"""``deepmia evaluate segment``: folders of label maps in, per-case CSV and a summary with intervals out."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.metrics.segmentation import segmentation_metrics
from deepmia.tasks.segment.evaluate import evaluate_dirs


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    pairs = []
    for i in range(5):
        ref = np.zeros((24, 24, 12), np.uint8)
        ref[5:15, 6:16, 3:9] = 1
        ref[15:20, 6:16, 3:9] = 2
        p = np.roll(ref, int(rng.integers(0, 3)), axis=0)
        nib.save(nib.Nifti1Image(ref, affine), gt / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(p, affine), pred / f"c{i}.nii.gz")
        pairs.append((p, ref))
    return pred, gt, pairs


def test_matches_the_metric_kernel(folders, tmp_path):
    pred, gt, pairs = folders
    summary = evaluate_dirs(pred, gt, labels={1: "a", 2: "b"}, n_resamples=200, out_dir=tmp_path / "report")
    expect = np.mean([segmentation_metrics(p, r, spacing=(0.8, 0.8, 2.0), labels=[1])[1].dice for p, r in pairs])
    assert summary["per_class"]["a"]["dice"]["mean"] == pytest.approx(expect)
    assert summary["n_cases"] == 5
    s = summary["mean"]["dice"]
    assert s["ci_low"] <= s["mean"] <= s["ci_high"]
    rows = list(csv.DictReader(open(tmp_path / "report" / "per_case.csv")))
    assert len(rows) == 10 and {"dice", "hd95", "nsd"} <= set(rows[0])


def test_missing_prediction_and_wrong_grid(folders):
    pred, gt, _ = folders
    (pred / "c0.nii.gz").unlink()
    with pytest.raises(InvalidArgumentError, match="no prediction"):
        evaluate_dirs(pred, gt, strict=True)  # without --strict: scored as partial (test_evaluate_partial.py)
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 12), np.uint8), np.eye(4)), pred / "c0.nii.gz")
    with pytest.raises(InvalidArgumentError, match="affine"):
        evaluate_dirs(pred, gt)


def test_cli(folders, tmp_path, capsys):
    pred, gt, _ = folders
    assert (
        main(["evaluate", "segment", str(pred), str(gt), "--labels", "1=a,2=b", "--out", str(tmp_path / "r"), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out["per_class"]) == {"a", "b"}
    assert (tmp_path / "r" / "summary.json").is_file()
    assert main(["evaluate", "segment", str(pred), str(gt), "--labels", "oops"]) == 2
