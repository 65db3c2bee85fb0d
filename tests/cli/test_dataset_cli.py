"""``deepmia dataset import|split|stats`` end to end through the CLI entry point."""

from __future__ import annotations

import json

import pytest

from deepmia.cli.main import main
from deepmia.data.dataset import Dataset


@pytest.mark.shared_data
def test_import_split_stats_voc(tmp_path, shared_data, capsys):
    dst = tmp_path / "bccd"
    assert main(["dataset", "import", "voc", str(shared_data / "bccd/BCCD"), str(dst), "--link", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 364 and summary["splits"] == {"folds": 1, "test": 72}

    assert main(["dataset", "split", str(dst)]) == 2  # official split is kept unless --force
    assert "already has splits" in capsys.readouterr().err

    assert main(["dataset", "split", str(dst), "--force", "--folds", "3", "--test-fraction", "0.1", "--seed", "2"]) == 0
    assert "3 folds" in capsys.readouterr().out
    splits = Dataset.load(dst).splits
    assert len(splits.folds) == 3 and abs(len(splits.test) - 36) <= 3
    assert splits.meta["seed"] == 2

    assert main(["dataset", "stats", str(dst), "--json"]) == 0
    fp = json.loads(capsys.readouterr().out)
    classes = fp["labels"]["classes"]
    assert {k: v["boxes"] for k, v in classes.items()} == {"Platelets": 361, "RBC": 4155, "WBC": 372}
    assert fp["shape"] == [{"min": 640, "median": 640, "max": 640}, {"min": 480, "median": 480, "max": 480}]


@pytest.mark.shared_data
def test_import_msd_and_stats_text(tmp_path, shared_data, capsys):
    dst = tmp_path / "h"
    code = main(["dataset", "import", "msd", str(shared_data / "hippocampus"), str(dst), "--limit", "4",
                 "--labels", "0=background,1=anterior,2=posterior", "--channel", "T1:MR"])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 cases" in out and "skipped images/hippocampus_118.nii.gz: image without a label map" in out
    assert main(["dataset", "stats", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "label 1 anterior" in out and "channel T1 (MR)" in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["dataset", "stats", str(tmp_path / "nope")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d/dataset.json").write_text('{"name": "x", "task": "classification", "channels": []}')
    assert main(["dataset", "split", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "channels" in err
    assert main(["dataset", "import", "folder", str(tmp_path), str(tmp_path / "o"), "--labels", "0=a"]) == 2
    assert "do not apply to format 'folder'" in capsys.readouterr().err
