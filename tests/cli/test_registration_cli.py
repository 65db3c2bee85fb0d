"""``deepmia register`` and ``deepmia evaluate register`` through the task's cli.register on a fresh Typer app."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from deepmia.cli import registration as cli
from deepmia.errors import GeometryError
from deepmia.io import read_image, write_image
from deepmia.tasks.register.evaluate import as_2d_if


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    root = typer.Typer()
    train, evaluate = typer.Typer(), typer.Typer()
    root.add_typer(train, name="train")
    root.add_typer(evaluate, name="evaluate")
    cli.add_commands(app=root, train=train, evaluate=evaluate)
    return root


@pytest.fixture(scope="module")
def ct(shared_data):
    return shared_data / "registration" / "ct2d_head"


def _run(app, args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("method", ["affine", "deformable"])
def test_register_writes_outputs_on_fixed_grid(app, ct, tmp_path, method):
    out = tmp_path / method
    printed = _run(
        app,
        [
            "register",
            ct / "CT_2D_head_fixed.mha",
            ct / "CT_2D_head_moving.mha",
            "--out",
            out,
            "--method",
            method,
            "--moving-label",
            ct / "CT_2D_head_moving_mask.mha",
            "--figure",
        ],
    )
    fixed = read_image(ct / "CT_2D_head_fixed.mha")
    for name in ("warped.nii.gz", "warped_label.nii.gz"):
        assert as_2d_if(read_image(out / name), 2).same_geometry(fixed)  # NIfTI keeps 2D as one slice
    assert (out / ("transform.tfm" if method == "affine" else "transform.h5")).is_file()
    for name in ("checkerboard.png", "overlay.png", "deformation_grid.png"):
        assert (out / name).stat().st_size > 1000
    summary = json.loads((out / "registration.json").read_text())
    assert summary["metric_after"] > summary["metric_before"]
    record = json.loads((out / "run.json").read_text())
    assert [i["name"] for i in record["inputs"]] == ["fixed", "moving", "moving_label"]
    assert record["predictor"]["options"]["method"] == method and record["inputs"][0]["sha256"]
    # the similarity is printed with its real name and sign: MSE falls and stays positive, MI rises
    name, before, after = re.search(r"(MSE|MI) (\S+) -> (\S+) in", printed.output).groups()
    before, after = float(before), float(after)
    assert (name, before > after > 0) == ("MSE", True) if method == "deformable" else (name == "MI" and after > before)

    _run(app, ["evaluate", "register", out, "--fixed-label", ct / "CT_2D_head_fixed_mask.mha", "--backward", out])
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.9 < metrics["labels"]["mean_dice"] <= 1.0
    assert metrics["jacobian"]["folding_fraction"] < 0.01
    assert metrics["inverse_consistency"]["mean"] > 0  # T followed by T itself is not the identity


def test_label_on_another_grid_is_refused(app, ct, tmp_path):
    label = read_image(ct / "CT_2D_head_moving_mask.mha", kind="label")
    cropped = label.with_geometry(label.array[:, :200], label.affine)
    write_image(cropped, tmp_path / "crop.nii.gz")
    with pytest.raises(GeometryError, match="geometry differs"):
        _run(
            app,
            [
                "register",
                ct / "CT_2D_head_fixed.mha",
                ct / "CT_2D_head_moving.mha",
                "--out",
                tmp_path / "o",
                "--method",
                "rigid",
                "--moving-label",
                tmp_path / "crop.nii.gz",
            ],
        )
    assert not (tmp_path / "o" / "warped.nii.gz").exists()


def test_landmark_tre(app, ct, tmp_path):
    out = tmp_path / "rigid"
    _run(
        app, ["register", ct / "CT_2D_head_fixed.mha", ct / "CT_2D_head_moving.mha", "--out", out, "--method", "rigid"]
    )
    from deepmia.processing.spatial_transform import SpatialTransform

    t = SpatialTransform.read(out / "transform.tfm")
    fixed_pts = np.array([[-20.0, 10.0, 0.0], [15.0, -30.0, 0.0], [0.0, 0.0, 0.0]])
    np.savetxt(tmp_path / "f.csv", fixed_pts, delimiter=",")
    np.savetxt(tmp_path / "m.csv", t.map_points(fixed_pts) + [0.5, 0.0, 0.0], delimiter=",")
    _run(
        app,
        [
            "evaluate",
            "register",
            out,
            "--fixed-landmarks",
            tmp_path / "f.csv",
            "--moving-landmarks",
            tmp_path / "m.csv",
        ],
    )
    tre = json.loads((out / "metrics.json").read_text())["tre"]
    assert tre["mean"] == pytest.approx(0.5, abs=1e-6)


def test_deepmia_command_reports_2d_with_3d(ct, tmp_path, capsys):
    from deepmia.cli.main import main
    from deepmia.image import Image

    write_image(Image(np.zeros((1, 8, 8, 8), np.float32)), tmp_path / "vol.nii.gz")
    code = main(
        ["register", str(ct / "CT_2D_head_fixed.mha"), str(tmp_path / "vol.nii.gz"), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "2D" in capsys.readouterr().err


@pytest.mark.parametrize(("budget", "seconds"), [("45m", 2700.0), ("90s", 90.0), ("1.5h", 5400.0), ("600", 600.0)])
def test_train_time_budget_takes_durations_like_every_task(app, tmp_path, monkeypatch, budget, seconds):
    """``--time-budget`` reads 45m / 90s / 1.5h as the other train commands do; a bare number stays seconds."""
    from deepmia.cli import _common
    from deepmia.tasks.register import train

    given = {}

    def fake_train(dataset, out, **options):
        given.update(options)
        return {"epochs": 1, "steps": 1, "seconds": 1.0, "best_val_dice": 0.5, "best_val_folding": 0.0}

    monkeypatch.setattr(train, "train_registration", fake_train)
    monkeypatch.setattr(_common, "write_card", lambda *a, **k: None)
    _run(app, ["train", "register", "--dataset", tmp_path, "--out", tmp_path / "m", "--time-budget", budget])
    assert given["time_budget_s"] == seconds


def test_train_time_budget_default_and_bad_value(app, tmp_path, monkeypatch):
    from deepmia.cli import _common
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks.register import train

    given = {}
    monkeypatch.setattr(train, "train_registration", lambda d, o, **options: given.update(options) or {
        "epochs": 1, "steps": 1, "seconds": 1.0, "best_val_dice": 0.5, "best_val_folding": 0.0})
    monkeypatch.setattr(_common, "write_card", lambda *a, **k: None)
    _run(app, ["train", "register", "--dataset", tmp_path, "--out", tmp_path / "m"])
    assert given["time_budget_s"] == 600.0  # the default is still ten minutes
    with pytest.raises(InvalidArgumentError, match="not a positive duration"):
        _run(app, ["train", "register", "--dataset", tmp_path, "--out", tmp_path / "m", "--time-budget", "ten"])
