"""``deepmia train classify --clinical --fusion late`` then ``deepmia predict MODEL IN OUT --clinical CSV`` on real
PneumoniaMNIST images: exit codes and one-line messages for the user's mistakes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepmia.cli.main import main

TINY = ["--set", "network_params.widths=[8,16,16,32]", "--set", "schedule.max_epochs=2", "--set",
        "schedule.batch_size=16", "--set", "members=1"]


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small dataset, its clinical table, three test images, and a late-fusion model trained by the CLI."""
    from deepmia.data.dataset import Dataset
    from deepmia.data.importers import import_medmnist

    root = tmp_path_factory.mktemp("cli_fusion")
    ds_dir = root / "ds"
    import_medmnist(shared_data / "medmnist" / "pneumoniamnist.npz", ds_dir, limit=32)
    table = root / "clinical.csv"
    rng = np.random.default_rng(1)
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_id", "age", "sex"])
        for i, c in enumerate(Dataset.load(ds_dir).cases):
            w.writerow([c.id, "" if i % 6 == 0 else f"{rng.integers(20, 90)}", ["F", "M", ""][i % 3]])
    src = root / "in"
    src.mkdir()
    for name in ("test_00004.png", "test_00005.png", "test_00006.png"):
        shutil.copy(ds_dir / "images" / name, src)
    model = root / "model"
    # A budget makes training measure widths and members; the user's --set values must still win.
    code = main(["train", "classify", "--dataset", str(ds_dir), "--out", str(model), "--clinical", str(table),
                 "--fusion", "late", "--time-budget", "10m", *TINY])
    assert code == 0
    return {"dataset": ds_dir, "table": table, "src": src, "model": model}


@pytest.mark.slow
def test_train_writes_a_late_fusion_plan_with_the_users_choices(setup: dict[str, Path]) -> None:
    plan = json.loads((setup["model"] / "plan.json").read_text())
    assert plan["fusion_mode"] == "late" and plan["schedule"]["time_budget_s"] == 600
    assert plan["tabular"]["numeric"].keys() == {"age"} and plan["tabular"]["categorical"] == {"sex": ["F", "M"]}
    assert plan["network_params"]["widths"] == [8, 16, 16, 32] and plan["members"] == 1
    assert "seconds_per_step_by_widths" in plan["measurements"]  # the budget fit ran, then the overrides applied


def test_predict_with_clinical(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(setup["model"]), str(setup["src"]), str(out), "--clinical", str(setup["table"])]) == 0
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["test_00004.png", "test_00005.png", "test_00006.png"]
    assert all(abs(float(r["prob_normal"]) + float(r["prob_pneumonia"]) - 1) < 1e-5 for r in rows)
    assert "3 predicted" in capsys.readouterr().out


def test_predict_errors_and_skips(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, src, table = str(setup["model"]), setup["src"], setup["table"]
    assert main(["predict", model, str(src), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {model}: this model fuses images with the clinical columns") and "\n" not in err
    assert "--clinical" in err
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("case_id,age,smoker\ntest_00004,50,yes\n")
    assert main(["predict", model, str(src), str(tmp_path / "o"), "--clinical", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert f"error: {wrong}:" in err and "['smoker']" in err and "['sex']" in err
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    (bad / "test_00007.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert main(["predict", model, str(bad), str(tmp_path / "o"), "--clinical", str(table)]) == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "test_00007.png" in captured.err and "3 of 4 predicted" in captured.out
    with (tmp_path / "o" / "skipped.csv").open() as f:
        skipped = list(csv.DictReader(f))
    assert [r["file"] for r in skipped] == ["test_00007.png"] and "truncated" in skipped[0]["reason"]
    assert main(["train", "classify", "--dataset", str(setup["dataset"]), "--out", str(tmp_path / "m"),
                 "--fusion", "film"]) == 2
    assert "need --clinical" in capsys.readouterr().err
