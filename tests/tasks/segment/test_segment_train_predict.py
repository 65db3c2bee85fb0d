"""End to end on real NIfTI files: train a tiny fold, predict in the input's geometry, resume after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from deepmia.engine.batch import run_batch
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.io import read_image
from deepmia.tasks.segment.predict import Predictor, keep_largest_component
from deepmia.tasks.segment.preprocess import preprocess_dataset
from deepmia.tasks.segment.train import train_fold


def test_train_predict_evaluate(spheres, tiny, tmp_path):
    model = tmp_path / "model"
    summary = train_fold(
        spheres.root, model, fold=0, overrides=tiny, cache=tmp_path / "cache", workers=1, log=lambda m: None
    )
    for name in (
        "plan.json",
        "split.json",
        "fold_0/model_best.pt",
        "fold_0/log.csv",
        "fold_0/training_curve.png",
        "fold_0/metrics.json",
        "fold_0/val_per_case.csv",
    ):
        assert (model / name).is_file(), name
    split = json.loads((model / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"]) and len(split["train"]) + len(split["val"]) == 6
    assert summary["n_cases"] == len(split["val"]) and 0 <= summary["mean"]["dice"]["mean"] <= 1
    plan = json.loads((model / "plan.json").read_text())
    assert plan["task"] == "segmentation" and plan["schedule"]["precision"] == "fp32"

    # Predict a file whose grid is unlike the training spacing: the output must be on the input's own grid.
    src = tmp_path / "in"
    src.mkdir()
    image = nib.load(spheres.root / "images" / "case0.nii.gz")
    affine = image.affine.copy()
    affine[:3, :3] = np.diag([1.2, 1.4, 2.5])
    affine[:3, 3] = [10, -4, 3]
    nib.save(nib.Nifti1Image(image.get_fdata().astype(np.float32), affine), src / "moved.nii.gz")
    nib.save(image, src / "same.nii.gz")
    (src / "broken.nii.gz").write_bytes(b"not a nifti")
    predictor = Predictor(model, tta=True)
    report = run_batch(predictor, src, tmp_path / "out")
    assert [name for name, _ in report.skipped] == ["broken.nii.gz"] and "broken.nii.gz" in report.skipped[0][1]
    assert sorted(report.predicted) == ["moved.nii.gz", "same.nii.gz"]
    for name in ("moved.nii.gz", "same.nii.gz"):
        inp, out = read_image(src / name), read_image(tmp_path / "out" / name, kind="label")
        assert out.spatial_shape == inp.spatial_shape
        np.testing.assert_allclose(out.affine, inp.affine, atol=1e-5)
        assert out.array.dtype.kind == "u" and set(np.unique(out.array)) <= {0, 1, 2}


def test_wrong_channels_are_refused(spheres, tiny, tmp_path):
    train_fold(
        spheres.root,
        tmp_path / "m",
        overrides=tiny + ["schedule.epochs=1"],
        cache=tmp_path / "c",
        workers=1,
        log=lambda m: None,
    )
    image = read_image(spheres.root / "images" / "case1.nii.gz")
    two = image.with_array(np.concatenate([image.array, image.array]))
    with pytest.raises(InvalidArgumentError, match="2 channel"):
        Predictor(tmp_path / "m").predict(two, path="two.nii.gz")
    with pytest.raises(InvalidArgumentError, match="fold"):
        Predictor(tmp_path / "m", folds=[3])


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint(spheres, tiny, tmp_path):
    model = tmp_path / "model"
    args = [
        "train",
        "segment",
        "--dataset",
        str(spheres.root),
        "--out",
        str(model),
        "--cache",
        str(tmp_path / "c"),
        "--workers",
        "1",
        "--time-budget",
        "25s",
    ]
    for o in tiny:
        if not o.startswith("schedule.epochs"):
            args += ["--set", o]
    args += ["--set", "schedule.epochs=100000"]
    cmd = [sys.executable, "-c", "import sys; from deepmia.cli.main import main; sys.exit(main(sys.argv[1:]))", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    log = model / "fold_0" / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-run, no chance to clean up
    proc.wait()
    done = len(log.read_text().splitlines()) - 1
    assert done >= 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from epoch" in again.stdout
    resumed_at = int(again.stdout.split("resumed from epoch")[1].split()[0])
    assert resumed_at >= done
    epochs = [int(line.split(",")[0]) for line in log.read_text().splitlines()[1:]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > resumed_at


@pytest.mark.parametrize(
    ("problem", "match"),
    [
        ("shape", "shape"),
        ("unknown", r"label values \[7\]"),
        ("nan", "NaN"),
        ("empty", "empty"),
    ],
)
def test_bad_cases_fail_preprocessing_naming_the_case(tmp_path, write_dataset, tiny, problem, match):
    def mutate(i, image, label):
        if i != 3:
            return image, label
        if problem == "shape":
            return image, label[:-2]
        if problem == "unknown":
            label = label.copy()
            label[0, 0, 0] = 7
        if problem == "nan":
            image = image.copy()
            image[1, 1, 1] = np.nan
        if problem == "empty":
            label = np.zeros_like(label)
        return image, label

    ds = write_dataset(tmp_path / problem, mutate=mutate)
    from deepmia.tasks.segment.plan import apply_overrides, make_plan

    plan = apply_overrides(make_plan(ds, _fingerprint_or_skip(ds, problem), machine={"cores": 2}), tiny)
    with pytest.raises(DatasetError, match=match) as info:
        preprocess_dataset(ds, plan, tmp_path / "cache", [c.id for c in ds.cases], workers=1)
    assert "case3" in str(info.value)


def _fingerprint_or_skip(ds, problem):
    # The fingerprint itself refuses a label map off its image's grid; planning from the clean cases keeps
    # this test about preprocessing.
    from deepmia.data.stats import fingerprint

    if problem == "shape":
        with pytest.raises(DatasetError, match="case3"):
            fingerprint(ds)
        return {
            "spatial_dims": 3,
            "spacing": [{"median": 1.5, "min": 1.5, "max": 1.5}] * 2 + [{"median": 2.0, "min": 2.0, "max": 2.0}],
            "shape": [{"median": 20}, {"median": 22}, {"median": 18}],
            "channels": [{"modality": "MR"}],
        }
    return fingerprint(ds)


def test_keep_largest_component():
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4] = 1
    labels[7, 7] = 1
    labels[6:9, 1:3] = 2
    out = keep_largest_component(labels, [1])
    assert out[7, 7] == 0 and out[2, 2] == 1 and (out == 2).sum() == 6
