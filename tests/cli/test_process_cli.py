"""``deepmia process`` and ``deepmia nyul-fit`` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.image import Image
from deepmia.io import read_image, write_image


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(32), np.arange(30), np.arange(16), indexing="ij")
    ball = (x - 16) ** 2 + (y - 15) ** 2 + ((z - 8) * 2) ** 2 < 8**2
    arr = (200.0 * ball + rng.normal(0, 10, ball.shape)).astype(np.float32)
    path = tmp_path / "in.nii.gz"
    write_image(Image(arr[None], np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_process_applies_steps_in_order_and_writes_outputs(volume, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    table = tmp_path / "t.csv"
    fig = tmp_path / "f.png"
    rc = main(
        [
            "process",
            str(volume),
            str(out),
            "--step",
            "gaussian:sigma=1.5",
            "--step",
            "otsu",
            "--step",
            "largest_component",
            "--table",
            str(table),
            "--figure",
            str(fig),
        ]
    )
    assert rc == 0
    seg = read_image(out)
    src = read_image(volume)
    np.testing.assert_allclose(seg.affine, src.affine)
    assert set(np.unique(seg.array)) == {0, 1}
    rows = list(csv.DictReader(open(table)))
    assert len(rows) == 1 and float(rows[0]["volume_mm3"]) == pytest.approx(float(seg.array.sum()) * 2.0)
    assert float(rows[0]["mean_intensity"]) > 150
    assert fig.stat().st_size > 5000


def test_process_json_table_and_frequency_response(volume, tmp_path):
    out = tmp_path / "o.nii.gz"
    resp = tmp_path / "r.png"
    rc = main(
        [
            "process",
            str(volume),
            str(out),
            "--step",
            "bandpass:low=0.05,high=0.2,kind=gaussian",
            "--response",
            str(resp),
        ]
    )
    assert rc == 0 and resp.stat().st_size > 5000
    rc = main(
        [
            "process",
            str(volume),
            str(out),
            "--step",
            "threshold:low=100",
            "--step",
            "components",
            "--table",
            str(tmp_path / "t.json"),
        ]
    )
    assert rc == 0
    rows = json.loads((tmp_path / "t.json").read_text())
    assert rows[0]["label"] == 1 and "centroid_mm" in rows[0]


def test_process_errors_are_one_line_with_exit_2(volume, tmp_path, capsys):
    out = str(tmp_path / "o.nii.gz")
    assert main(["process", str(volume), out, "--step", "gausian"]) == 2
    assert "did you mean 'gaussian'" in capsys.readouterr().err
    assert main(["process", str(volume), out, "--step", "median:radius=-3"]) == 2
    assert "allowed: an integer in [0, 20]" in capsys.readouterr().err
    labels = tmp_path / "lab.nii.gz"
    write_image(Image(np.ones((1, 4, 4, 4), np.uint8), kind="label"), labels)
    assert main(["process", str(labels), out, "--label", "--step", "clahe"]) == 2
    assert "refuses a label image" in capsys.readouterr().err
    assert main(["process", str(volume), str(tmp_path / "o.xyz"), "--step", "mean"]) == 2
    assert main(["process", str(volume), out]) == 2
    assert "no --step" in capsys.readouterr().err


def test_process_list_shows_every_step(capsys):
    assert main(["process", "--list"]) == 0
    text = capsys.readouterr().out
    for name in ("gaussian", "clahe", "resample", "region_grow", "nyul", "n4", "bandpass"):
        assert f"{name}:" in text


def test_nyul_fit_then_apply(tmp_path, volume):
    rng = np.random.default_rng(5)
    paths = []
    for i, (scale, shift) in enumerate([(1.0, 0.0), (2.0, 30.0), (0.5, -10.0)]):
        base = read_image(volume).array * scale + shift + rng.normal(0, 1, (1, 32, 30, 16))
        p = tmp_path / f"train{i}.nii.gz"
        write_image(Image(base.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), p)
        paths.append(p)
    model = tmp_path / "nyul.json"
    assert main(["nyul-fit", *map(str, paths), "--out", str(model)]) == 0
    assert json.loads(model.read_text())["num_images"] == 3
    outs = []
    for i, p in enumerate(paths):
        o = tmp_path / f"std{i}.nii.gz"
        assert main(["process", str(p), str(o), "--step", f"nyul:model={model}"]) == 0
        outs.append(read_image(o).array)
    # linear scanner differences vanish after standardisation
    np.testing.assert_allclose(np.percentile(outs[0], 90), np.percentile(outs[1], 90), rtol=0.05, atol=2)
