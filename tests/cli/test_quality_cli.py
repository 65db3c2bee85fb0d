"""``deepmia quality`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.image import Image
from deepmia.io import write_image


def _write(tmp_path, name, noise, seed=0):
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 40, 20)], indexing="ij")
    arr = 100.0 * (x**2 + y**2 + z**2 < 0.7) + 40.0 * (x**2 + y**2 < 0.1) + rng.normal(0, noise, x.shape)
    path = tmp_path / name
    write_image(Image(arr[None].astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def test_quality_json_with_reference_mask_and_figure(tmp_path, capsys):
    clean = _write(tmp_path, "clean.nii.gz", 1.0)
    noisy = _write(tmp_path, "noisy.nii.gz", 25.0, seed=1)
    mask = tmp_path / "mask.nii.gz"
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 40, 20)], indexing="ij")
    write_image(
        Image((x**2 + y**2 + z**2 < 0.7)[None].astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]), kind="label"), mask
    )
    fig = tmp_path / "q.png"
    rc = main(["quality", str(noisy), "--reference", str(clean), "--mask", str(mask), "--json", "--figure", str(fig)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    by = {m["name"]: m for m in data["measures"]}
    assert by["snr"]["status"] in ("warn", "fail") and by["psnr_db"]["value"] < 30
    assert "threshold" in by["ssim"] and data["status"] in ("warn", "fail")
    assert fig.stat().st_size > 5000


def test_quality_table_and_errors(tmp_path, capsys):
    clean = _write(tmp_path, "clean.nii.gz", 1.0)
    assert main(["quality", str(clean), "--no-bias"]) == 0
    out = capsys.readouterr().out
    assert "snr" in out and "ghosting" in out and "pass" in out
    other = tmp_path / "small.nii.gz"
    write_image(Image(np.zeros((1, 8, 8, 8), np.float32)), other)
    assert main(["quality", str(clean), "--reference", str(other)]) == 2
    assert "differs" in capsys.readouterr().err


def test_quality_of_a_dicom_series_measures_its_slice_spacing(tmp_path, capsys):
    import pydicom

    folder = tmp_path / "series"
    write_image(Image(np.random.default_rng(0).normal(100, 5, (1, 24, 24, 6)).astype(np.int16),
                      np.diag([1.0, 1.0, 2.0, 1.0]), meta={"modality": "CT"}), folder, format="dicom")
    # Slightly uneven spacing (2, 2, 2.015, 1.985, 2 mm): within the reader's 1% tolerance, so read as one volume.
    offsets = [0.0, 2.0, 4.0, 6.015, 8.0, 10.0]
    files = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for path, z in zip(files, offsets, strict=True):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z]
        ds.save_as(path)
    assert main(["quality", str(folder), "--no-bias", "--json"]) == 0
    by = {m["name"]: m for m in json.loads(capsys.readouterr().out)["measures"]}
    steps = np.diff(offsets)
    assert by["slice_spacing_cv"]["value"] == pytest.approx(steps.std() / steps.mean(), rel=1e-3)
    assert by["slice_spacing_cv"]["value"] > 0 and by["slice_spacing_cv"]["status"] == "pass"
