"""One model-card writer for every task: the shipped models' cards regenerate with their numbers and notes."""

import json
import shutil
from pathlib import Path

import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.report.model_card import SECTION_TITLES, write_model_card

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = {"pneumoniamnist": "classify", "adrenalmnist3d": "classify", "hippocampus": "segment",
           "bccd": "detect", "hippocampus_registration": "register"}


def _copy_json(name: str, dst: Path) -> Path:
    """The model directory's JSON files (no weights) in ``dst``."""
    src = MODELS / name
    out = dst / name
    out.mkdir()
    for path in src.rglob("*.json"):
        target = out / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return out


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_card_regenerates_same_as_committed(tmp_path, name):
    model = _copy_json(name, tmp_path)
    card = write_model_card(model, task=SHIPPED[name]).read_text()
    assert card == (MODELS / name / "README.md").read_text()
    for title in ("Data", "Validation metrics", "Training", "Intended use and limits"):
        assert f"## {title}" in card
    positions = [card.index(f"## {t}") for t in SECTION_TITLES if f"## {t}" in card]
    assert positions == sorted(positions)
    assert "Licence of the training data" in card and "unknown" not in card.split("## Plan")[0]


def test_card_numbers_come_from_metrics(tmp_path):
    model = _copy_json("pneumoniamnist", tmp_path)
    metrics = json.loads((model / "metrics.json").read_text())
    metrics["test"]["accuracy"] = 0.1234
    (model / "metrics.json").write_text(json.dumps(metrics))
    card = write_model_card(model, task="classification").read_text()
    assert "| accuracy | 0.123 |" in card
    assert "DeLong 95% CI" in card and "CC BY 4.0" in card and "MedMNIST v2 (Yang J." in card


def test_segment_card_intervals_and_fold_metrics(tmp_path):
    model = _copy_json("hippocampus", tmp_path)
    (model / "metrics.json").unlink()
    card = write_model_card(model, task="segment").read_text()
    fold = json.loads((model / "fold_0" / "metrics.json").read_text())
    dice = fold["per_class"]["anterior"]["dice"]
    assert f"{dice['mean']:.3f} [{dice['ci_low']:.3f}, {dice['ci_high']:.3f}]" in card
    assert json.loads((model / "metrics.json").read_text())["folds"]["0"]["n_cases"] == fold["n_cases"]


def test_dataset_and_notes_are_stored_for_later_cards(tmp_path):
    model = _copy_json("bccd", tmp_path)
    (model / "card_notes.json").unlink()
    (model / "dataset_info.json").unlink()
    write_model_card(model, task="detect", dataset={"name": "cells", "license": "MIT", "source": "here"},
                     notes={"Training": "Trained on a loaned CPU.", "Caveats": "Few platelets."})
    card = write_model_card(model, task="detect").read_text()  # a later card (after evaluate) keeps both
    assert "- Dataset: cells." in card and "Licence of the training data: MIT" in card
    assert card.index("Trained on a loaned CPU.") > card.index("## Training")
    assert "## Caveats\n\nFew platelets." in card
    assert "0.913 [0.889, 0.936]" in card  # test mAP@0.5 with its bootstrap interval


def test_positive_class_and_threshold_line(tmp_path):
    model = _copy_json("pneumoniamnist", tmp_path)
    cal = json.loads((model / "calibration.json").read_text())
    (model / "calibration.json").write_text(json.dumps({**cal, "positive_class": "pneumonia"}))
    card = write_model_card(model, task="classify").read_text()
    assert f"Positive (disease) class: pneumonia; the operating threshold {cal['threshold']:.3f}" in card


def test_unknown_task_and_missing_plan_are_refused(tmp_path):
    model = _copy_json("bccd", tmp_path)
    with pytest.raises(InvalidArgumentError, match="segment"):
        write_model_card(model, task="segmnt")
    with pytest.raises(InvalidArgumentError, match="plan.json"):
        write_model_card(tmp_path / "empty", task="detect")
