"""Evaluation inside region-of-interest masks, pooled pixel metrics and pixel AUC from probability maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.io import write_image
from deepmia.metrics.classification import roc_auc
from deepmia.tasks.segment.evaluate import PooledCounts, evaluate_dirs


@pytest.fixture()
def cases(tmp_path):
    """Five 2D cases: reference, noisy probabilities, their thresholded prediction, and a disc ROI."""
    rng = np.random.default_rng(1)
    dirs = {name: tmp_path / name for name in ("gt", "pred", "roi", "prob")}
    for d in dirs.values():
        d.mkdir()
    out = []
    yy, xx = np.mgrid[:30, :26]
    for i in range(5):
        ref = np.zeros((30, 26), np.uint8)
        ref[5 + i : 9 + i, 3:23] = 1
        ref[20:22, 2:24] = 1  # partly outside the ROI
        roi = ((yy - 14) ** 2 + (xx - 13) ** 2) < 100
        fg = np.clip(ref * 0.6 + rng.normal(0.2, 0.2, ref.shape), 0, 1).astype(np.float32)
        fg[0, 0] = 1.0  # outside the ROI: a confident false positive that must not count
        pred = (fg > 0.5).astype(np.uint8)
        probs = np.stack([1 - fg, fg])
        write_image(Image(ref[None], kind="label"), dirs["gt"] / f"c{i}.png")
        write_image(Image(pred[None], kind="label"), dirs["pred"] / f"c{i}.tif")  # other format, same stem
        write_image(Image(roi[None].astype(np.uint8), kind="label"), dirs["roi"] / f"c{i}.png")
        write_image(Image(probs), dirs["prob"] / f"c{i}.tif")
        out.append((ref, pred, roi, fg))
    return dirs, out


def test_scores_inside_the_roi_pooled_and_per_case(cases, tmp_path):
    dirs, data = cases
    summary = evaluate_dirs(dirs["pred"], dirs["gt"], mask_dir=dirs["roi"], prob_dir=dirs["prob"], n_resamples=300,
                            out_dir=tmp_path / "report")
    # Per-case Dice counts ROI pixels only.
    dice = [2 * (p[m] & r[m]).sum() / (p[m].sum() + r[m].sum()) for r, p, m, _ in (
        (r.astype(bool), p.astype(bool), m, f) for r, p, m, f in data)]
    assert summary["per_class"]["1"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    # Pooled: all ROI pixels of all cases together.
    ref = np.concatenate([r[m] for r, _, m, _ in data]).astype(bool)
    pred = np.concatenate([p[m] for _, p, m, _ in data]).astype(bool)
    score = np.concatenate([f[m] for _, _, m, f in data])
    pooled = summary["pooled"]["1"]
    tp, fp, fn = (pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()
    assert pooled["dice"]["value"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert pooled["sensitivity"]["value"] == pytest.approx(tp / ref.sum())
    assert pooled["accuracy"]["value"] == pytest.approx((pred == ref).mean())
    assert pooled["auc"]["value"] == pytest.approx(roc_auc(ref, score), abs=1e-12)
    for key in ("dice", "auc"):
        assert pooled[key]["ci_low"] <= pooled[key]["value"] <= pooled[key]["ci_high"]
    per_case_auc = [roc_auc(r[m].astype(bool), f[m]) for r, _, m, f in data]
    assert summary["per_class"]["1"]["auc"]["mean"] == pytest.approx(np.mean(per_case_auc), abs=1e-12)
    rows = (tmp_path / "report/per_case.csv").read_text().splitlines()
    assert rows[0].endswith(",auc") and len(rows) == 6
    assert json.loads((tmp_path / "report/summary.json").read_text())["roi"] == str(dirs["roi"])


def test_the_roi_changes_the_score(cases):
    dirs, _ = cases
    inside = evaluate_dirs(dirs["pred"], dirs["gt"], mask_dir=dirs["roi"], n_resamples=0)
    everywhere = evaluate_dirs(dirs["pred"], dirs["gt"], n_resamples=0)
    assert inside["pooled"]["1"]["dice"]["value"] != everywhere["pooled"]["1"]["dice"]["value"]
    assert "auc" not in everywhere["pooled"]["1"]


def test_a_bootstrap_resample_of_the_pooled_auc_is_the_auc_of_the_duplicated_pixels():
    rng = np.random.default_rng(3)
    counts = PooledCounts()
    cases = []
    for _ in range(4):
        ref = rng.random(200) < 0.3
        score = np.round(ref * 0.3 + rng.random(200), 2)  # ties across cases
        counts.update(score > 0.6, ref, score)
        cases.append((ref, score))
    from deepmia.tasks.segment.evaluate import _auc_matrix

    pairs = _auc_matrix(counts.positives, counts.negatives)
    pick = np.array([0, 0, 3, 1])
    w = np.bincount(pick, minlength=4).astype(float)
    npos = np.array([p.size for p in counts.positives], float)
    nneg = np.array([n.size for n in counts.negatives], float)
    ref = np.concatenate([cases[i][0] for i in pick])
    score = np.concatenate([cases[i][1] for i in pick])
    assert (w @ pairs @ w) / ((w @ npos) * (w @ nneg)) == pytest.approx(roc_auc(ref, score), abs=1e-12)


def test_missing_mask_and_wrong_probability_channels_are_refused(cases, tmp_path):
    dirs, _ = cases
    (dirs["roi"] / "c3.png").unlink()
    with pytest.raises(InvalidArgumentError, match="'c3' has no ROI mask"):
        evaluate_dirs(dirs["pred"], dirs["gt"], mask_dir=dirs["roi"])
    write_image(Image(np.zeros((3, 26, 30), np.float32)), dirs["prob"] / "c0.tif")
    write_image(Image(np.zeros((1, 30, 26), np.uint8), kind="label"), dirs["gt"] / "c0.png")
    with pytest.raises(InvalidArgumentError, match="probability map shape"):
        evaluate_dirs(dirs["pred"], dirs["gt"], prob_dir=dirs["prob"])


def test_cli_mask_and_probabilities(cases, capsys):
    dirs, _ = cases
    code = main(["evaluate", "segment", str(dirs["pred"]), str(dirs["gt"]), "--mask-dir", str(dirs["roi"]),
                 "--prob-dir", str(dirs["prob"]), "--json"])
    assert code in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert 0.5 < summary["pooled"]["1"]["auc"]["value"] <= 1
