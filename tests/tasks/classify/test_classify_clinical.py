"""The prediction contract of an image + clinical (FiLM) model on real PneumoniaMNIST images: clinical rows are
joined on the file stem and encoded with the statistics stored at training; bad tables and bad images are typed
errors or reported skips."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepmia.errors import DatasetError, InvalidArgumentError

TINY = ["network_params.widths=[8,16,16,32]", "schedule.max_epochs=2", "schedule.batch_size=16", "schedule.threads=1",
        "fusion_mode=film"]
IMAGES = ("test_00000", "test_00001", "test_00002")


@pytest.fixture(scope="module")
def fused(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32-cases-per-split PneumoniaMNIST dataset, its clinical table and a FiLM model trained on both."""
    from deepmia.data.dataset import Dataset
    from deepmia.data.importers import import_medmnist
    from deepmia.tasks.classify.train import train

    root = tmp_path_factory.mktemp("fusion")
    ds_dir = root / "ds"
    import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", ds_dir, limit=32)
    rng = np.random.default_rng(0)
    table = root / "clinical.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "crp", "site"])
        for i, c in enumerate(Dataset.load(ds_dir).cases):
            crp = ["", "NA"][i % 2] if i % 5 == 0 else f"{c.classes[0] * 40 + rng.normal(10, 5):.1f}"
            w.writerow([c.id, crp, ["A", "B", ""][i % 3]])
    src = root / "in"
    src.mkdir()
    for stem in IMAGES:
        shutil.copy(ds_dir / "images" / f"{stem}.png", src)
    model = root / "model"
    train(ds_dir, model, overrides=TINY, clinical=table)
    return {"dataset": ds_dir, "table": table, "src": src, "model": model}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_encoder_statistics_are_stored_and_reused_at_prediction(fused: dict[str, Path], tmp_path: Path) -> None:
    from deepmia.data.dataset import Dataset
    from deepmia.tasks.classify.data import encode_table, load_cases, read_table
    from deepmia.tasks.classify.predict import Predictor

    plan = json.loads((fused["model"] / "plan.json").read_text())
    train_ids = json.loads((fused["model"] / "split.json").read_text())["train"]
    table = read_table(fused["table"])
    crp = [float(table[c]["crp"]) for c in train_ids if table[c]["crp"] not in ("", "NA")]
    assert plan["fusion_mode"] == "film"
    assert np.allclose(plan["tabular"]["numeric"]["crp"], (np.mean(crp), np.std(crp)))
    assert plan["tabular"]["categorical"] == {"site": ["A", "B"]}
    p = Predictor(fused["model"])
    report = p.predict_path(fused["src"], tmp_path / "out", clinical=fused["table"])
    assert report["predicted"] == 3 and not report["skipped"] and not report["notes"]
    got = np.array([[float(r["prob_normal"]), float(r["prob_pneumonia"])] for r in _rows(tmp_path / "out" /
                                                                                       "predictions.csv")])
    ds = Dataset.load(fused["dataset"])
    ids = list(IMAGES)
    want = p.predict_arrays(load_cases(ds, ids, p.plan), encode_table(table, ids, p.plan.tabular))["probabilities"]
    assert np.allclose(got, want, atol=2e-6)


def test_missing_and_unseen_values_are_encoded_as_at_training(fused: dict[str, Path], tmp_path: Path) -> None:
    from deepmia.tasks.classify.predict import Predictor

    p = Predictor(fused["model"])

    def probs(crp: str, site: str) -> tuple[np.ndarray, dict]:
        table = _write(tmp_path / "t.csv", ["case_id", "crp", "site"], [[s, crp, site] for s in IMAGES])
        report = p.predict_path(fused["src"], tmp_path / "o", clinical=table)
        rows = _rows(tmp_path / "o" / "predictions.csv")
        return np.array([float(r["prob_pneumonia"]) for r in rows]), report

    empty, _ = probs("", "")
    na, _ = probs("NA", "null")
    unseen, report = probs("", "Z")
    assert np.array_equal(empty, na) and np.array_equal(empty, unseen)
    assert any("'Z'" in n and "site" in n for n in report["notes"])
    low, _ = probs("0", "A")
    high, _ = probs("90", "A")
    assert not np.allclose(low, high)  # the model reads the clinical value
    bad = _write(tmp_path / "bad.csv", ["case_id", "crp", "site"], [[s, "high", "A"] for s in IMAGES])
    with pytest.raises(DatasetError, match="'crp' holds 'high'") as info:
        p.predict_path(fused["src"], tmp_path / "o", clinical=bad)
    assert str(bad) in str(info.value)


def test_clinical_table_errors_name_the_file_and_problem(fused: dict[str, Path], tmp_path: Path) -> None:
    from deepmia.tasks.classify.predict import Predictor

    p = Predictor(fused["model"])
    with pytest.raises(InvalidArgumentError, match="--clinical") as info:
        p.predict_path(fused["src"], tmp_path / "o")
    assert str(fused["model"]) in str(info.value) and "crp" in str(info.value)
    extra = _write(tmp_path / "extra.csv", ["case_id", "crp", "site", "weight"], [[s, "3", "A", "70"] for s in IMAGES])
    with pytest.raises(DatasetError, match=r"unknown clinical column\(s\) \['weight'\]") as info:
        p.predict_path(fused["src"], tmp_path / "o", clinical=extra)
    assert str(extra) in str(info.value)
    lacking = _write(tmp_path / "lacking.csv", ["case_id", "crp"], [[s, "3"] for s in IMAGES])
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['site'\]"):
        p.predict_path(fused["src"], tmp_path / "o", clinical=lacking)
    no_id = _write(tmp_path / "no_id.csv", ["patient", "crp", "site"], [[s, "3", "A"] for s in IMAGES])
    with pytest.raises(DatasetError, match="no 'case_id' column"):
        p.predict_path(fused["src"], tmp_path / "o", clinical=no_id)
    strangers = _write(tmp_path / "strangers.csv", ["case_id", "crp", "site"], [["p1", "3", "A"], ["p2", "", "B"]])
    with pytest.raises(DatasetError, match="matches an input file") as info:
        p.predict_path(fused["src"], tmp_path / "o", clinical=strangers)
    assert str(strangers) in str(info.value)
    with pytest.raises(DatasetError, match="matches an input file"):
        p.predict_path(fused["src"] / "test_00000.png", tmp_path / "o", clinical=strangers)


def test_images_without_a_row_or_not_fitting_are_skipped_and_reported(fused: dict[str, Path], tmp_path: Path) -> None:
    from deepmia.image import Image
    from deepmia.io import write_image
    from deepmia.tasks.classify.predict import Predictor

    src = tmp_path / "in"
    shutil.copytree(fused["src"], src)
    write_image(Image(np.zeros((1, 28, 28, 6), np.float32)), src / "volume.nii.gz")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    partial = _write(tmp_path / "partial.csv", ["case_id", "crp", "site"],
                     [["test_00000", "12", "A"], ["test_00002", "", "B"], ["volume", "3", "A"], ["corrupt", "3", "A"],
                      ["someone_else", "1", "A"]])
    p = Predictor(fused["model"])
    report = p.predict_path(src, tmp_path / "out", clinical=partial)
    assert report["predicted"] == 2
    assert [r["file"] for r in _rows(tmp_path / "out" / "predictions.csv")] == ["test_00000.png", "test_00002.png"]
    reasons = {r["file"]: r["reason"] for r in _rows(tmp_path / "out" / "skipped.csv")}
    assert set(reasons) == {"test_00001.png", "volume.nii.gz", "corrupt.png"}
    assert "no row with case_id 'test_00001'" in reasons["test_00001.png"] and str(partial) in reasons["test_00001.png"]
    assert "3D image" in reasons["volume.nii.gz"] and "volume.nii.gz" in reasons["volume.nii.gz"]
    assert "corrupt.png" in reasons["corrupt.png"]
    with pytest.raises(InvalidArgumentError, match="3D image"):
        p.predict_path(src / "volume.nii.gz", tmp_path / "o2", clinical=partial)
    with pytest.raises(DatasetError, match="matches an input file"):  # the one input has no row
        p.predict_path(src / "test_00001.png", tmp_path / "o3", clinical=partial)
    report = p.predict_path(src / "test_00000.png", tmp_path / "out", clinical=partial)
    assert report["predicted"] == 1 and not (tmp_path / "out" / "skipped.csv").exists()  # stale list removed
