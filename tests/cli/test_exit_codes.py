"""One exit-status rule for every command: 0 all done, 1 some inputs failed (listed), 2 nothing done or bad usage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deepmia.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
MODEL = str(ROOT / "models" / "pneumoniamnist")
DICOM = ROOT / "deepmia" / "samples" / "dicom" / "files"

# Every command that reads inputs, as a function of the input and a fresh output path.
COMMANDS = {
    "info": lambda src, out: ["info", src],
    "convert": lambda src, out: ["convert", src, f"{out}.nii.gz"],
    "deid": lambda src, out: ["deid", src, out],
    "catalog scan": lambda src, out: ["catalog", "scan", src, "--db", f"{out}.sqlite"],
    "process": lambda src, out: ["process", src, f"{out}.nii.gz", "--step", "gaussian:sigma=1"],
    "quality": lambda src, out: ["quality", src],
    "dataset import": lambda src, out: ["dataset", "import", "folder", src, out],
    "nyul-fit": lambda src, out: ["nyul-fit", src, "--out", f"{out}.json"],
    "predict": lambda src, out: ["predict", MODEL, src, out],
    "explain": lambda src, out: ["explain", MODEL, src, out],
    "evaluate segment": lambda src, out: ["evaluate", "segment", src, src],
    "evaluate classify": lambda src, out: ["evaluate", "classify", MODEL, "--dataset", src, "--out", out],
    "evaluate detect": lambda src, out: ["evaluate", "detect", src, src],
    "evaluate register": lambda src, out: ["evaluate", "register", src],
    "dataset stats": lambda src, out: ["dataset", "stats", src],
}


@pytest.fixture()
def inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_text("not a picture")
    return {"bad file": str(tmp_path / "bad.png"), "empty folder": str(tmp_path / "empty")}


@pytest.mark.parametrize("kind", ["bad file", "empty folder"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_nothing_done_exits_2_with_one_error_line(tmp_path, capsys, inputs, command, kind):
    code = main(COMMANDS[command](inputs[kind], str(tmp_path / "out")))
    err = capsys.readouterr().err
    assert code == 2, err
    assert [line for line in err.splitlines() if line.startswith("error: ")], err


def _dicom_tree_with_a_note(root: Path) -> Path:
    src = root / "tree"
    shutil.copytree(DICOM, src)
    (src / "notes.txt").write_text("not DICOM")
    return src


def test_deid_with_a_non_dicom_file_exits_1_and_lists_it(tmp_path, capsys):
    src = _dicom_tree_with_a_note(tmp_path)
    assert main(["deid", str(src), str(tmp_path / "out")]) == 1
    assert "not DICOM, not copied: notes.txt" in capsys.readouterr().err
    (src / "notes.txt").unlink()
    assert main(["deid", str(src), str(tmp_path / "out2")]) == 0


def test_catalog_scan_with_a_file_not_indexed_exits_1_and_lists_it(tmp_path, capsys):
    src = _dicom_tree_with_a_note(tmp_path)
    db = str(tmp_path / "c.sqlite")
    assert main(["catalog", "scan", str(src), "--db", db, "--workers", "1"]) == 1
    assert "notes.txt: not_dicom" in capsys.readouterr().err
    only_notes = tmp_path / "notes"
    only_notes.mkdir()
    (only_notes / "a.txt").write_text("x")
    assert main(["catalog", "scan", str(only_notes), "--db", db, "--workers", "1"]) == 2


def test_dataset_import_with_a_skipped_file_exits_1_nothing_imported_exits_2(tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "deepmia" / "samples" / "xray", src / "xray")
    assert main(["dataset", "import", "folder", str(src), str(tmp_path / "a")]) == 0
    (src / "captions.csv").write_text("file,caption\n")
    assert main(["dataset", "import", "folder", str(src), str(tmp_path / "b")]) == 1
    assert "captions.csv" in capsys.readouterr().out
    assert main(["dataset", "import", "folder", str(src), str(tmp_path / "c"), "--exclude", "*.png"]) == 2
    assert not (tmp_path / "c").exists()  # nothing imported: no empty dataset left behind
