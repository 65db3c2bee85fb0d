"""The task contract: registry, one Predictor/Result shape in memory and in worker processes, the batch loop."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepmia.cli.main import main
from deepmia.errors import InvalidArgumentError
from deepmia.io import read_image, write_image
from deepmia.tasks import TASKS, load_predictor, task_of_model

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
HIPPO = REPO / "deepmia" / "samples" / "hippocampus" / "hippocampus_003.nii.gz"


def test_every_task_is_registered_and_finds_its_models():
    assert TASKS.names() == ["classify", "detect", "register", "segment"]
    found = {m.name: task_of_model(m).name for m in sorted(MODELS.iterdir()) if (m / "plan.json").exists()}
    assert found == {"adrenalmnist3d": "classify", "bccd": "detect", "hippocampus": "segment",
                     "hippocampus_registration": "register", "pneumoniamnist": "classify"}


def test_a_folder_without_a_plan_or_with_an_unknown_task_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="no plan.json"):
        task_of_model(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"task": "retrieval"}))
    with pytest.raises(InvalidArgumentError, match="'retrieval'.*known: "):
        load_predictor(tmp_path)


def test_no_gpu_means_cuda_is_refused_and_cpu_is_said(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidArgumentError, match="no GPU"):
        load_predictor(MODELS / "pneumoniamnist", device="cuda")
    assert main(["predict", str(MODELS / "pneumoniamnist"), str(REPO / "deepmia/samples/xray"), str(tmp_path)]) == 0
    assert "4 of 4 predicted on cpu" in capsys.readouterr().out


@pytest.mark.slow
def test_the_docs_example_runs_every_model_in_memory_and_in_worker_processes(tmp_path):
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "tasks.md").read_text(), re.S).group(1)
    script = tmp_path / "example.py"  # a file, not -c: spawned workers import the main module by path
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    models = [line.split()[0] for line in out.stdout.splitlines()]
    assert sorted(models) == sorted(f"models/{m.name}" for m in MODELS.iterdir() if (m / "plan.json").exists())


def _series(image, folder: Path, number: int, description: str) -> None:
    write_image(image, folder, format="dicom", series_number=number, series_description=description)


@pytest.fixture(scope="module")
def hippocampus_series(tmp_path_factory):
    """The bundled hippocampus volume written as a DICOM series, and a second series beside it in a study folder."""
    root = tmp_path_factory.mktemp("series")
    image = read_image(HIPPO)
    image.meta.update(modality="MR")
    _series(image, root / "study" / "one", 3, "T1 crop")
    _series(image, root / "study" / "two", 4, "T1 crop again")
    return root / "study"


def test_a_series_folder_is_one_input_and_a_study_folder_one_input_per_series(hippocampus_series, tmp_path):
    model = str(MODELS / "hippocampus")
    assert main(["predict", model, str(hippocampus_series / "one"), str(tmp_path / "a")]) == 0
    labels = sorted(p.name for p in (tmp_path / "a").glob("*.nii.gz"))
    assert labels == ["one.nii.gz"]  # one 3D label map, not one per slice file
    out = read_image(tmp_path / "a" / "one.nii.gz", kind="label")
    src = read_image(hippocampus_series / "one")
    assert out.spatial_shape == src.spatial_shape and np.allclose(out.affine, src.affine, atol=1e-4)
    assert main(["predict", model, str(hippocampus_series), str(tmp_path / "b")]) == 0
    assert sorted(p.name for p in (tmp_path / "b").glob("*.nii.gz")) == ["3_T1_crop.nii.gz", "4_T1_crop_again.nii.gz"]
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert [i["files"] for i in record["inputs"]] == [src.spatial_shape[2]] * 2


def test_run_json_records_model_hashes_inputs_versions_and_device(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.nii.gz").write_bytes(HIPPO.read_bytes())
    (src / "notes.txt").write_text("not an image")
    assert main(["predict", str(MODELS / "hippocampus"), str(src), str(tmp_path / "out")]) == 1  # one skipped
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    plan_hash = hashlib.sha256((MODELS / "hippocampus" / "plan.json").read_bytes()).hexdigest()
    assert record["predictor"]["hashes"]["plan"] == plan_hash and record["predictor"]["device"] == "cpu"
    assert record["predictor"]["options"]["folds"] == [0]
    assert record["inputs"][0]["sha256"] == hashlib.sha256(HIPPO.read_bytes()).hexdigest()
    assert record["environment"]["packages"]["torch"] and record["predicted"] == ["a.nii.gz"]
    assert record["skipped"] == [{"file": "notes.txt", "reason": "not an image file or DICOM series deepmia reads"}]
    with (tmp_path / "out" / "skipped.csv").open() as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["notes.txt"]
    with (tmp_path / "out" / "measurements.csv").open() as f:
        rows = list(csv.DictReader(f))
    labels = read_image(tmp_path / "out" / "a.nii.gz", kind="label").array
    voxels = {r["target"]: int(r["value"]) for r in rows if r["quantity"] == "voxels"}
    assert voxels == {"anterior": int((labels == 1).sum()), "posterior": int((labels == 2).sum())}


def test_an_output_path_with_an_image_suffix_is_one_file(tmp_path, capsys):
    model = str(MODELS / "hippocampus")
    assert main(["predict", model, str(HIPPO), str(tmp_path / "out" / "x.nii.gz")]) == 0
    assert (tmp_path / "out" / "x.nii.gz").is_file() and (tmp_path / "out" / "x.run.json").is_file()
    folder = REPO / "deepmia" / "samples" / "hippocampus"
    assert main(["predict", model, str(folder), str(tmp_path / "y.nii.gz")]) == 2
    assert "cannot go into one file" in capsys.readouterr().err
    xray = REPO / "deepmia/samples/xray/pneumoniamnist_test_000_label1.png"
    assert main(["predict", str(MODELS / "pneumoniamnist"), str(xray), str(tmp_path / "z.png")]) == 2


def test_options_of_another_task_are_refused(tmp_path, capsys):
    assert main(["predict", str(MODELS / "hippocampus"), str(HIPPO), str(tmp_path / "o"), "--min-score", "0.5"]) == 2
    assert "--min-score does not apply to a segment model" in capsys.readouterr().err


def test_a_volume_of_unknown_spacing_is_refused_by_a_3d_model(tmp_path):
    image = read_image(HIPPO)
    image.meta["spacing_unknown"] = True
    predictor = load_predictor(MODELS / "hippocampus")
    with pytest.raises(InvalidArgumentError, match="spacing is unknown"):
        predictor.predict(image)


@pytest.mark.shared_data
def test_a_film_unlike_the_training_images_is_flagged_not_trusted(shared_data, tmp_path, capsys):
    film = shared_data / "dicom" / "pydicom" / "RG1_J2KI.dcm"
    assert main(["predict", str(MODELS / "pneumoniamnist"), str(film), str(tmp_path)]) == 0
    with (tmp_path / "predictions.csv").open() as f:
        row = next(csv.DictReader(f))
    assert row["low_confidence"] == "1" and "outside the training range 28 x 28" in row["input_warnings"]
    assert "training standard deviations" in row["input_warnings"]
    assert "warning: RG1_J2KI.dcm: size" in capsys.readouterr().err
    record = json.loads((tmp_path / "run.json").read_text())
    assert len(record["warnings"]) == 2


def test_in_distribution_samples_get_no_warning():
    for model, path in [("pneumoniamnist", "xray/pneumoniamnist_test_000_label1.png"),
                        ("bccd", "photo/BloodImage_00000.jpg"), ("hippocampus", "hippocampus/hippocampus_001.nii.gz")]:
        predictor = load_predictor(MODELS / model)
        assert predictor.input_warnings(read_image(REPO / "deepmia" / "samples" / path)) == [], model


def test_shipped_models_are_installed_with_the_package_and_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: names, not paths
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in ("hippocampus ", "pneumoniamnist", "bccd", "hippocampus_registration"))
    assert main(["models", "bccd"]) == 0 and "# BCCD detection model" in capsys.readouterr().out
    assert main(["predict", "hippocampus", str(HIPPO), "out"]) == 0
    assert (tmp_path / "out" / "hippocampus_003.nii.gz").is_file()
    assert main(["predict", "hipocampus", str(HIPPO), "out2"]) == 2
    assert "shipped models: adrenalmnist3d, bccd, hippocampus" in capsys.readouterr().err


def test_a_one_slice_volume_is_conformed_to_a_2d_model(tmp_path):
    from deepmia.image import Image

    xray = read_image(REPO / "deepmia/samples/xray/pneumoniamnist_test_000_label1.png")
    volume = Image(xray.array[..., None], xray.affine, meta=dict(xray.meta))  # how a one-image DICOM series reads
    predictor = load_predictor("pneumoniamnist")
    flat = predictor.conform(volume)
    assert flat.spatial_shape == xray.spatial_shape and np.array_equal(flat.array, xray.array)
    assert predictor.predict(flat).label == predictor.predict(xray).label
    assert load_predictor("hippocampus").conform(volume) is volume  # a 3D model keeps it
