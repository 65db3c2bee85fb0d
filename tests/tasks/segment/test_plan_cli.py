"""``deepmia plan`` plans any task through the task registry."""

from __future__ import annotations

import json

from deepmia.cli.main import main


def test_plan_segmentation_and_registration_from_one_dataset(write_dataset, tmp_path, capsys):
    ds = write_dataset(tmp_path / "ds", n=20)
    assert main(["plan", str(ds.root), "--out", str(tmp_path / "seg.json")]) == 0
    seg = json.loads((tmp_path / "seg.json").read_text())
    assert seg["task"] == "segmentation" and seg["spatial_dims"] == 3
    assert main(["plan", str(ds.root), "--task", "register", "--time-budget", "5m", "--out",
                 str(tmp_path / "reg.json")]) == 0
    reg = json.loads((tmp_path / "reg.json").read_text())
    assert reg["task"] == "registration" and reg["network"] == "affine_voxelmorph"
    assert main(["plan", str(ds.root), "--task", "detect"]) == 2
    assert "detect trains on detection datasets; this one is segmentation" in capsys.readouterr().err
