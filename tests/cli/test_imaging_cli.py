"""``deepmia info`` and ``deepmia convert``: in process through ``main()``, and as the installed command."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.io import read_image

DEEPMIA = Path(sys.executable).with_name("deepmia")


@pytest.fixture
def mr(shared_data):
    return shared_data / "ct_mr_examples" / "example_mr_sm.nii.gz"


def _one_error_line(err: str, name: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and name in lines[0]
    assert "Traceback" not in err


def test_info_json_has_shape_and_spacing(mr, capsys):
    assert main(["info", str(mr), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    nii = nib.load(mr)
    assert info["shape"] == [1, *nii.shape]
    np.testing.assert_allclose(info["spacing_mm"], nii.header.get_zooms()[:3])
    np.testing.assert_allclose(info["affine"], nii.affine, atol=1e-5)
    assert info["orientation"] == "LPS" and info["dtype"] == "int16"


def test_info_table(mr, capsys):
    assert main(["info", str(mr)]) == 0
    out = capsys.readouterr().out
    assert "orientation" in out and "LPS" in out and "(1, 117, 91, 20)" in out


def test_convert_nifti_to_nrrd_to_mha_keeps_data(tmp_path, mr, capsys):
    assert main(["convert", str(mr), str(tmp_path / "a.nrrd")]) == 0
    assert main(["convert", str(tmp_path / "a.nrrd"), str(tmp_path / "b.mha")]) == 0
    original, final = read_image(mr), read_image(tmp_path / "b.mha")
    assert final.dtype == original.dtype
    np.testing.assert_array_equal(final.array, original.array)
    np.testing.assert_allclose(final.affine, original.affine, atol=1e-4)
    assert "wrote" in capsys.readouterr().out


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "fake.png").write_text("this is text, not a picture")
    (tmp_path / "x.foo").write_bytes(b"\x00" * 200)
    return {
        "not a png": (["info", str(tmp_path / "fake.png")], "fake.png"),
        "missing": (["info", str(tmp_path / "missing.nii.gz")], "missing.nii.gz"),
        "unknown suffix": (["info", str(tmp_path / "x.foo")], "x.foo"),
        "unknown output suffix": (["convert", str(tmp_path / "fake.png"), str(tmp_path / "out.xyz")], "out.xyz"),
    }


@pytest.mark.parametrize("case", ["not a png", "missing", "unknown suffix", "unknown output suffix"])
def test_bad_input_prints_one_error_line_and_exits_2(tmp_path, capsys, case):
    args, name = _bad_inputs(tmp_path)[case]
    assert main(args) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, name)
    assert captured.out == ""


def test_debug_raises_with_traceback(tmp_path):
    args, _ = _bad_inputs(tmp_path)["not a png"]
    with pytest.raises(Exception, match="fake.png"):
        main(["--debug", *args])


@pytest.mark.skipif(not DEEPMIA.exists(), reason="the deepmia command is not installed next to this Python")
def test_installed_command(tmp_path, mr):
    ok = subprocess.run([str(DEEPMIA), "info", str(mr), "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["spacing_mm"] == [3.0, 3.0, 3.0]

    args, name = _bad_inputs(tmp_path)["not a png"]
    bad = subprocess.run([str(DEEPMIA), *args], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    _one_error_line(bad.stderr, name)

    debug = subprocess.run([str(DEEPMIA), "--debug", *args], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CorruptFileError" in debug.stderr


def test_info_series_folder_shows_geometry(shared_data, capsys):
    folder = shared_data / "dicom" / "mr_study" / "Study3" / "11_HCropVolume"
    assert main(["info", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    image = read_image(folder)
    geometry = out["geometry"]
    assert len(out["series"]) == 1 and geometry["size"] == list(image.spatial_shape)
    np.testing.assert_allclose(geometry["spacing_mm"], image.spacing, atol=1e-6)
    assert geometry["orientation"] == image.orientation and geometry["spacing_known"] is True
    assert (geometry["min"], geometry["max"]) == (float(image.array.min()), float(image.array.max()))
    assert main(["info", str(folder)]) == 0
    table = capsys.readouterr().out
    for key in ("size", "spacing_mm", "orientation", "min", "max"):
        assert f"  {key} " in table


def test_info_multi_series_folder_lists_and_takes_series_uid(shared_data, capsys):
    study = shared_data / "dicom" / "mr_study"
    assert main(["info", str(study), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["series"]) > 1 and "geometry" not in out
    assert main(["info", str(study)]) == 0
    assert "--series-uid" in capsys.readouterr().out
    chosen = out["series"][1]
    assert main(["info", str(study), "--series-uid", chosen["series_uid"], "--json"]) == 0
    geometry = json.loads(capsys.readouterr().out)["geometry"]
    assert geometry["size"][:2] == [chosen["columns"], chosen["rows"]]
    assert geometry["size"][2] == read_image(study, series_uid=chosen["series_uid"]).spatial_shape[2]
    assert main(["info", str(study), "--series-uid", "1.2.3.nonesuch"]) == 2
    assert chosen["series_uid"] in capsys.readouterr().err


def test_info_shows_unknown_spacing(shared_data, capsys):
    film = shared_data / "dicom" / "pydicom" / "RG1_J2KI.dcm"  # PixelSpacing [0, 0]
    assert main(["info", str(film), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spacing_mm"] is None and out["spacing_known"] is False
    assert out["inverted_from"] == "MONOCHROME1"
    assert main(["info", str(film)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "spacing_mm" in ln)
    assert "unknown" in line and "1.0" not in line


def test_info_folder_without_dicom_exits_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    assert main(["info", str(tmp_path)]) == 2
    assert "no DICOM series" in capsys.readouterr().err


def test_info_series_that_is_not_one_volume_lists_it_and_says_why(shared_data, capsys):
    folder = shared_data / "dicom" / "dicom2nifti" / "failing" / "gantrytilting" / "001"
    assert main(["info", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "4 files" in captured.out and "gantry tilt" in captured.err


def test_info_of_a_picture_says_spacing_and_orientation_are_unknown(tmp_path, capsys):
    """A JPEG's 25 dpi is a print resolution: no spacing, and a picture has no patient orientation."""
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "fundus.jpg", dpi=(25, 25))
    assert main(["info", str(tmp_path / "fundus.jpg"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spacing_mm"] is None and out["spacing_known"] is False and out["orientation"] is None
    assert main(["info", str(tmp_path / "fundus.jpg")]) == 0
    text = capsys.readouterr().out
    assert "spacing_mm     unknown" in text and "orientation    unknown" in text
