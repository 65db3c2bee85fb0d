"""A model directory of the wrong task gets one sentence naming both tasks, never the plan's validation dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError

MODELS = Path(__file__).resolve().parents[2] / "models"
SAMPLES = Path(__file__).resolve().parents[2] / "deepmia" / "samples"
XRAY = SAMPLES / "xray" / "pneumoniamnist_test_000_label1.png"
HIPPO = SAMPLES / "hippocampus" / "hippocampus_001.nii.gz"


@pytest.mark.parametrize(
    "model, found",
    [("hippocampus", "segmentation"), ("bccd", "detection"), ("hippocampus_registration", "registration")],
)
def test_explain_needs_a_classification_model(tmp_path, capsys, model, found):
    assert main(["explain", str(MODELS / model), str(XRAY), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"explain needs a classification model (this is a {found} model)" in err
    assert err.count("\n") == 1 and "Extra inputs" not in err  # one line, no pydantic dump
    assert not (tmp_path / "out").exists()


def test_evaluate_classify_needs_a_classification_model(tmp_path, capsys):
    code = main(["evaluate", "classify", str(MODELS / "bccd"), "--dataset", str(tmp_path),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "evaluate classify needs a classification model (this is a detection model)" in capsys.readouterr().err


def test_learned_registration_needs_a_registration_model(tmp_path, capsys):
    code = main(["register", str(HIPPO), str(HIPPO), "--out", str(tmp_path / "r"), "--method", "learned",
                 "--model", str(MODELS / "hippocampus")])
    err = capsys.readouterr().err
    assert code == 2 and "this is a segmentation model's plan, not a registration one" in err
    assert "Extra inputs" not in err


@pytest.mark.parametrize(
    "module, model, found",
    [("segment", "pneumoniamnist", "classification"), ("classify", "hippocampus", "segmentation"),
     ("detect", "hippocampus", "segmentation")],
)
def test_every_plan_loader_names_the_other_task(module, model, found):
    """``train <task> --plan FILE`` and every task's predictor read plans through these loaders."""
    import importlib

    load_plan = importlib.import_module(f"deepmia.tasks.{module}.plan").load_plan
    with pytest.raises(InvalidArgumentError, match=f"this is a {found} model's plan") as info:
        load_plan(MODELS / model / "plan.json")
    assert "Extra inputs" not in str(info.value)
