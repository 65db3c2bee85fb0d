"""``evaluate segment`` on a partial prediction: the cases in both folders are scored, the rest listed as missing;
what ``deepmia predict`` writes beside its label maps is never a case."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.tasks.segment.evaluate import evaluate_dirs


@pytest.fixture()
def partial(tmp_path):
    """Five references; predictions of c2..c4 only, in a folder laid out as ``deepmia predict`` writes it."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    (pred / "probabilities").mkdir(parents=True)
    (pred / "figures").mkdir()
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    ref = np.zeros((16, 16, 6), np.uint8)
    ref[4:10, 4:12, 1:5] = 1
    for i in range(5):
        nib.save(nib.Nifti1Image(ref, affine), gt / f"c{i}.nii.gz")
        if i >= 2:
            nib.save(nib.Nifti1Image(np.roll(ref, i - 2, axis=0), affine), pred / f"c{i}.nii.gz")
            nib.save(nib.Nifti1Image(np.zeros((16, 16, 6, 2), np.float32), affine),
                     pred / "probabilities" / f"c{i}.nii.gz")
    (pred / "figures" / "c0.png").write_bytes(b"")  # a folder's images are not cases of the prediction
    (pred / "run.json").write_text("{}")
    (pred / "measurements.csv").write_text("file,measure,value\n")
    (pred / "skipped.csv").write_text("file,reason\nc0.nii.gz,unreadable\nc1.nii.gz,unreadable\n")
    return pred, gt


def test_cases_in_both_folders_are_scored_and_the_rest_listed(partial, tmp_path):
    pred, gt = partial
    summary = evaluate_dirs(pred, gt, n_resamples=20, out_dir=tmp_path / "r")
    assert summary["n_cases"] == 3 and summary["n_references"] == 5
    assert summary["missing"] == ["c0", "c1"] and summary["unmatched_predictions"] == []
    assert summary["per_class"]["1"]["dice"]["mean"] < 1  # c3, c4 are shifted: real scores of the three cases
    written = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert written["missing"] == ["c0", "c1"]
    with pytest.raises(InvalidArgumentError, match="2 reference"):
        evaluate_dirs(pred, gt, strict=True)


def test_cli_lists_missing_cases_and_exits_1_strict_exits_2(partial, tmp_path, capsys):
    pred, gt = partial
    assert main(["evaluate", "segment", str(pred), str(gt), "--out", str(tmp_path / "r")]) == 1
    captured = capsys.readouterr()
    assert "3 cases" in captured.out
    assert "2 of 5 references" in captured.err and "c0, c1" in captured.err
    assert main(["evaluate", "segment", str(pred), str(gt), "--strict"]) == 2
    assert "no prediction" in capsys.readouterr().err
    for name in ("c0", "c1"):  # a complete prediction exits 0
        nib.save(nib.load(gt / f"{name}.nii.gz"), pred / f"{name}.nii.gz")
    assert main(["evaluate", "segment", str(pred), str(gt)]) == 0


def test_no_case_in_both_folders_is_refused(partial, tmp_path, capsys):
    pred, gt = partial
    other = tmp_path / "other"
    other.mkdir()
    nib.save(nib.load(gt / "c0.nii.gz"), other / "x.nii.gz")
    assert main(["evaluate", "segment", str(other), str(gt)]) == 2
    assert "no prediction has the name of a reference" in capsys.readouterr().err
