"""``deepmia dataset import|split|stats`` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert code == 1  # an image without a label map is skipped (listed below)
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


@pytest.mark.shared_data
def test_import_folder_busi_copy_pairs_masks_excludes_and_reports_every_skipped_file(tmp_path, shared_data, capsys):
    """BUSI's original release has '<image>_mask.png' beside each image: they used to be imported as class images,
    and a top-level all_captions.csv was dropped without a word."""
    import shutil

    busi, src = shared_data / "busi", tmp_path / "busi"
    for cls, names in (("benign", ["benign (1).png", "benign (2).png", "benign (3).png"]),
                       ("malignant", ["malignant (1).png", "malignant (2).png"])):
        (src / cls).mkdir(parents=True)
        for n in names:
            shutil.copy(busi / cls / n, src / cls / n)
    shutil.copy(busi / "benign" / "benign (4).png", src / "benign" / "benign (1)_mask.png")
    shutil.copy(busi / "benign" / "benign (4).png", src / "benign" / "benign (1)_mask_1.png")
    shutil.copy(busi / "benign" / "benign (5).png", src / "benign" / "benign (9)_mask.png")  # its image is absent
    shutil.copy(busi / "all_captions.csv", src / "all_captions.csv")
    dst = tmp_path / "ds"
    # 1: all_captions.csv and an orphan mask are skipped (listed); the --exclude'd file does not count
    assert main(["dataset", "import", "folder", str(src), str(dst), "--exclude", "*(3).png", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    ds = Dataset.load(dst)
    assert sorted(c.id for c in ds.cases) == ["benign/benign (1)", "benign/benign (2)", "malignant/malignant (1)",
                                              "malignant/malignant (2)"]
    assert [Path(m).name for m in ds.case("benign/benign (1)").meta["masks"]] == ["benign (1)_mask.png",
                                                                                  "benign (1)_mask_1.png"]
    assert all((dst / m).is_file() for m in ds.case("benign/benign (1)").meta["masks"])
    skipped = {s["item"]: s["reason"] for s in summary["skipped"]}
    assert skipped.keys() == {"all_captions.csv", "benign/benign (3).png", "benign/benign (9)_mask.png"}
    assert "beside the class folders" in skipped["all_captions.csv"]
    assert "--exclude '*(3).png'" in skipped["benign/benign (3).png"]
    assert "not a class image" in skipped["benign/benign (9)_mask.png"]
    assert any("2 mask file(s) paired" in n for n in summary["notes"])
