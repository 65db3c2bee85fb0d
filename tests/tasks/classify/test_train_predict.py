"""End to end on real images: train a tiny classifier, predict files and folders (bad inputs reported), evaluate,
explain, and the clinical-table fusion path with its errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepmia.errors import DatasetError, InvalidArgumentError, ReadError

TINY = ["network_params.widths=[8,16,16,32]", "schedule.max_epochs=2", "schedule.batch_size=16", "schedule.threads=1"]


@pytest.fixture(scope="module")
def pneumonia(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deepmia.data.importers import import_medmnist

    dst = tmp_path_factory.mktemp("pneu") / "ds"
    import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", dst, limit=32)
    return dst


@pytest.fixture(scope="module")
def model(pneumonia: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deepmia.tasks.classify.train import train

    out = tmp_path_factory.mktemp("model") / "m"
    train(pneumonia, out, overrides=TINY)
    from deepmia.data.dataset import Dataset
    from deepmia.report.model_card import write_model_card

    write_model_card(out, task="classify", dataset=Dataset.load(pneumonia))  # as `deepmia train classify` does
    return out


def test_model_directory_is_complete(model: Path) -> None:
    for name in ("plan.json", "calibration.json", "split.json", "metrics.json", "README.md", "fold_0/model_best.pt"):
        assert (model / name).exists(), name
    split = json.loads((model / "split.json").read_text())
    assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    cal = json.loads((model / "calibration.json").read_text())
    assert cal["temperature"] > 0 and 0 <= cal["threshold"] <= 1
    assert "CC BY 4.0" in (model / "README.md").read_text()


def test_predict_folder_reports_bad_files_and_keeps_going(model: Path, pneumonia: Path, tmp_path: Path) -> None:
    from deepmia.tasks.classify.predict import Predictor

    src = tmp_path / "in"
    src.mkdir()
    for name in ("test_00000.png", "test_00001.png"):
        shutil.copy(pneumonia / "images" / name, src / name)
    np.save(src / "array.npy", np.asarray(np.random.default_rng(0).random((28, 28)) * 255, dtype=np.float32))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((28, 28, 3), np.uint8)).save(src / "colour.png")
    p = Predictor(model)
    report = p.predict_path(src, tmp_path / "out")
    assert report["predicted"] == 3
    assert sorted(n for n, _ in report["skipped"]) == ["broken.png", "colour.png"]
    with (tmp_path / "out" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "prob_normal", "prob_pneumonia", "uncertainty", "low_confidence",
                             "input_warnings"]
    for r in rows:
        assert abs(float(r["prob_normal"]) + float(r["prob_pneumonia"]) - 1) < 1e-5
        assert r["label"] in ("normal", "pneumonia") and float(r["uncertainty"]) >= 0
    skipped = (tmp_path / "out" / "skipped.csv").read_text()
    assert "channel" in skipped
    with pytest.raises(ReadError):
        p.predict_path(src / "broken.png", tmp_path / "out2")
    with pytest.raises(InvalidArgumentError, match="channel"):
        p.predict_path(src / "colour.png", tmp_path / "out3")


def test_mc_dropout_gives_uncertainty(model: Path, pneumonia: Path) -> None:
    from deepmia.data.dataset import Dataset
    from deepmia.tasks.classify.data import load_cases
    from deepmia.tasks.classify.predict import Predictor

    p = Predictor(model, mc_dropout=8, tta=False)
    ds = Dataset.load(pneumonia)
    x = load_cases(ds, [c.id for c in ds.cases[:6]], p.plan)
    assert (p.predict_arrays(x)["uncertainty"] > 0).all()
    assert (Predictor(model, tta=False).predict_arrays(x)["uncertainty"] == 0).all()  # one sample: no spread


def test_evaluate_and_explain(model: Path, pneumonia: Path, tmp_path: Path) -> None:
    from deepmia.explain.classify import explain_path
    from deepmia.tasks.classify.evaluate import evaluate

    m = evaluate(model, pneumonia, tmp_path / "ev", target_sensitivity=0.9, n_resamples=50)
    assert m["n_cases"] == 32 and 0 <= m["accuracy"] <= 1
    assert {"ece", "ece_uncalibrated", "confusion_matrix", "at_target_sensitivity"} <= set(m)
    assert (tmp_path / "ev" / "reliability.png").stat().st_size > 1000
    src = pneumonia / "images" / "test_00003.png"
    report = explain_path(model, src, tmp_path / "ex", methods=["gradcam", "occlusion"])
    assert report["explained"] == 1
    assert (tmp_path / "ex" / "test_00003_gradcam.png").exists()
    assert (tmp_path / "ex" / "test_00003_occlusion.png").exists()


def test_fusion_with_clinical_table_and_its_errors(pneumonia: Path, tmp_path: Path) -> None:
    from deepmia.data.dataset import Dataset
    from deepmia.tasks.classify.predict import Predictor
    from deepmia.tasks.classify.train import train

    ds = Dataset.load(pneumonia)
    table = tmp_path / "clinical.csv"
    rng = np.random.default_rng(0)
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "crp", "site"])
        for i, c in enumerate(ds.cases):
            crp = "" if i % 7 == 0 else f"{c.classes[0] * 40 + rng.normal(10, 5):.1f}"
            w.writerow([c.id, crp, ["A", "B", ""][i % 3]])
    out = tmp_path / "fused"
    train(pneumonia, out, overrides=[*TINY, "fusion_mode=film"], clinical=table)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["tabular"]["numeric"].keys() == {"crp"} and plan["tabular"]["categorical"] == {"site": ["A", "B"]}
    p = Predictor(out)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(pneumonia / "images" / "test_00000.png", src)
    assert p.predict_path(src, tmp_path / "o", clinical=table)["predicted"] == 1
    with pytest.raises(InvalidArgumentError, match="clinical"):
        p.predict_path(src, tmp_path / "o")
    bad = tmp_path / "extra.csv"
    bad.write_text("case_id,crp,site,weight\ntest_00000,3,A,70\n")
    with pytest.raises(DatasetError, match="unknown clinical column"):
        p.predict_path(src, tmp_path / "o", clinical=bad)
    stray = tmp_path / "stray.csv"
    stray.write_text(table.read_text() + "nobody,1,A\n")
    with pytest.raises(DatasetError, match="match no case"):
        train(pneumonia, tmp_path / "f2", overrides=TINY, clinical=stray)
    with pytest.raises(DatasetError, match="unknown clinical column"):
        train(pneumonia, tmp_path / "f3", overrides=TINY, clinical=table, clinical_columns=["crp", "age"])
