"""ONNX export and the torch / ONNX Runtime / OpenVINO network runners (issue 15).

Each shipped model is copied to a temporary folder, exported there, and predicted with torch and with the exported
file on real inputs from ../shared/data: the results must agree (segmentation Dice, classification probabilities,
detection boxes, registration displacements). Exports take 10-60 s each on the shared 2-core machine: those tests
are marked slow; the bad-input cases and a tiny network run in the fast suite.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmia.engine.onnx_export import export_model, export_network
from deepmia.engine.runners import NetworkSpec, use_runtime
from deepmia.errors import ExportError, InvalidArgumentError
from deepmia.tasks import load_predictor, resolve_model


def _copy(name: str, tmp: Path) -> Path:
    dst = tmp / name
    shutil.copytree(resolve_model(name), dst)
    return dst


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    fg_a, fg_b = a > 0, b > 0
    denom = fg_a.sum() + fg_b.sum()
    return 1.0 if denom == 0 else float(2 * (fg_a & fg_b & (a == b)).sum() / denom)


# ------------------------------------------------------------------ fast: a tiny network, bad input


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _NoOnnx(_Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + torch.linalg.eigvalsh(y.flatten(2) @ y.flatten(2).transpose(1, 2)).sum()


def _spec(module: torch.nn.Module, weights: Path, holder: list) -> NetworkSpec:
    return NetworkSpec("fold_0", module, (torch.zeros(1, 1, 16, 16),), ("image",), ("logits",),
                       {"image": {0: "batch", 2: "h", 3: "w"}}, weights, lambda m: holder.__setitem__(0, m))


def test_a_tiny_network_runs_the_same_in_onnx_runtime_at_other_sizes_and_pickles(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _Tiny().eval()
    (tmp_path / "fold_0").mkdir()
    torch.save(net.state_dict(), tmp_path / "fold_0" / "model_best.pt")
    holder = [net]
    record = export_model([_spec(net, tmp_path / "fold_0" / "model_best.pt", holder)], tmp_path)
    assert record["networks"]["fold_0"]["files"]["fp32"]["max_abs_diff"] < 1e-5
    runner = use_runtime(lambda: [_spec(net, tmp_path / "fold_0" / "model_best.pt", holder)], tmp_path, "onnx",
                         "fp32")[0]
    assert holder[0] is runner  # installed where the network was
    x = torch.randn(3, 1, 24, 40)  # another batch and spatial size: the axes are dynamic
    with torch.no_grad():
        assert torch.allclose(runner(x), net(x), atol=1e-5)
    again = pickle.loads(pickle.dumps(runner))  # predictors travel to worker processes
    assert torch.allclose(again(x), runner(x))


def test_quantising_reuses_the_export_of_the_same_weights_and_a_new_export_drops_stale_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, holder, weights = _Tiny().eval(), [None], tmp_path / "fold_0" / "model_best.pt"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    export_model([_spec(net, weights, holder)], tmp_path)
    fp32 = tmp_path / "fold_0" / "model.onnx"
    before = fp32.stat().st_mtime_ns
    record = export_model([_spec(net, weights, holder)], tmp_path, quantize="fp16")
    assert fp32.stat().st_mtime_ns == before  # not exported again
    assert set(record["networks"]["fold_0"]["files"]) == {"fp32", "fp16"}
    assert record["networks"]["fold_0"]["files"]["fp16"]["max_abs_diff"] < 1e-2
    with torch.no_grad():
        net.conv.weight.mul_(2)
    torch.save(net.state_dict(), weights)  # retrained: the fp16 file of the old weights must go
    with pytest.raises(InvalidArgumentError, match="other weights"):
        use_runtime(lambda: [_spec(net, weights, holder)], tmp_path, "onnx", "fp16")
    record = export_model([_spec(net, weights, holder)], tmp_path)
    assert set(record["networks"]["fold_0"]["files"]) == {"fp32"}
    assert not (tmp_path / "fold_0" / "model_fp16.onnx").exists()


def test_a_network_onnx_cannot_express_is_refused_naming_the_operator(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"eigvalsh|linalg_eigh|_linalg_eigh") as err:
        export_network(_spec(_NoOnnx().eval(), tmp_path / "w.pt", [None]), tmp_path / "model.onnx")
    assert "operator" in str(err.value)
    assert not (tmp_path / "model.onnx").exists()


def test_exporting_into_a_shipped_model_folder_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from deepmia.cli.main import main

    assert main(["export", "onnx", "hippocampus"]) == 2
    assert "export a copy" in capsys.readouterr().err
    assert not list(resolve_model("hippocampus").glob("fold_*/*.onnx"))


def test_runtime_onnx_without_an_export_tells_the_export_command(tmp_path: Path) -> None:
    model = _copy("hippocampus", tmp_path)
    with pytest.raises(InvalidArgumentError, match="deepmia export onnx") as err:
        load_predictor(model, runtime="onnx")
    assert "model.onnx" in str(err.value)
    with pytest.raises(InvalidArgumentError, match="precision"):
        load_predictor(model, runtime="onnx", precision="bf16")  # ONNX Runtime has no bf16 kernels on the CPU


def test_the_predict_command_takes_runtime_from_the_predictor_signature(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepmia.cli.main import main

    model = _copy("pneumoniamnist", tmp_path)
    src = shared_data / "hippocampus" / "images" / "hippocampus_003.nii.gz"
    assert main(["predict", str(model), str(src), str(tmp_path / "out"), "--runtime", "onnx"]) == 2
    assert "deepmia export onnx" in capsys.readouterr().err


# ------------------------------------------------------------------ slow: every shipped model, exported


@pytest.fixture(scope="module")
def hippocampus(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    model = _copy("hippocampus", tmp_path_factory.mktemp("onnx"))
    from deepmia.cli.export_onnx import calibration_images

    predictor = load_predictor(model, tta=False)
    ids, images = calibration_images(model, shared_data / "hippocampus" / "images", 4)
    from deepmia.engine.onnx_export import record_inputs

    feeds = record_inputs(predictor.onnx_networks(), predictor.predict, images)
    export_model(predictor.onnx_networks(), model, quantize="int8", calibration=feeds, calibration_cases=ids,
                 calibration_source="test")
    return model


@pytest.mark.slow
def test_segmentation_onnx_openvino_and_int8_agree_with_torch(hippocampus: Path, shared_data: Path) -> None:
    from deepmia.io import read_image

    split = json.loads((hippocampus / "split.json").read_text())
    record = json.loads((hippocampus / "fold_0" / "model_int8_calibration.json").read_text())
    assert record["cases"] and set(record["cases"]) <= set(split["train"])  # calibrated on training cases only
    runs = {(rt, p): load_predictor(hippocampus, runtime=rt, precision=p, tta=False)
            for rt, p in [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32"), ("onnx", "int8")]}
    assert runs["openvino", "fp32"].options()["inference_precision_hint"] == "f32"  # set, not the CPU's bf16
    for case in split["val"][:2]:
        image = read_image(shared_data / "hippocampus" / "images" / f"{case}.nii.gz")
        labels = {k: p.predict(image).labels.array[0] for k, p in runs.items()}
        ref = labels["torch", "fp32"]
        assert _dice(labels["onnx", "fp32"], ref) >= 0.99
        assert _dice(labels["openvino", "fp32"], ref) >= 0.99
        assert _dice(labels["onnx", "int8"], ref) >= 0.9


@pytest.mark.slow
def test_segmentation_run_json_records_the_runtime(hippocampus: Path, shared_data: Path, tmp_path: Path) -> None:
    from deepmia.cli.main import main

    src = shared_data / "hippocampus" / "images"
    out = tmp_path / "out"
    assert main(["predict", str(hippocampus), str(src / "hippocampus_003.nii.gz"), str(out), "--runtime", "openvino",
                 "--no-tta"]) == 0
    options = json.loads(next(tmp_path.rglob("run.json")).read_text())["predictor"]["options"]
    assert options["runtime"] == "openvino" and options["inference_precision_hint"] == "f32"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pneumoniamnist", "adrenalmnist3d"])
def test_classification_probabilities_agree_within_1e_3(name: str, tmp_path: Path, shared_data: Path) -> None:
    from deepmia.image import Image

    model = _copy(name, tmp_path)
    torch_predictor = load_predictor(model)
    export_model(torch_predictor.onnx_networks(), model)
    data = np.load(shared_data / "medmnist" / f"{name}.npz")
    images = [Image((a.T if a.ndim == 2 else a)[None].astype(np.float32), np.eye(4), meta={"case_id": f"test_{i}"})
              for i, a in enumerate(data["test_images"][:4])]
    ref = np.stack([r.probabilities for r in torch_predictor.predict_many(images)])
    got = np.stack([r.probabilities for r in load_predictor(model, runtime="onnx").predict_many(images)])
    assert np.abs(got - ref).max() < 1e-3


@pytest.mark.slow
def test_detection_boxes_match(tmp_path: Path, shared_data: Path) -> None:
    from deepmia.io import read_image
    from deepmia.metrics.detection import box_iou

    model = _copy("bccd", tmp_path)
    torch_predictor = load_predictor(model)
    export_model(torch_predictor.onnx_networks(), model)
    onnx_predictor = load_predictor(model, runtime="onnx")
    for stem in ("BloodImage_00007", "BloodImage_00011"):
        image = read_image(shared_data / "bccd" / "BCCD" / "JPEGImages" / f"{stem}.jpg")
        ref, got = torch_predictor.predict(image), onnx_predictor.predict(image)
        keep_r, keep_g = ref.scores >= 0.3, got.scores >= 0.3
        assert abs(int(keep_r.sum()) - int(keep_g.sum())) <= 1
        iou = box_iou(ref.boxes[keep_r], got.boxes[keep_g])
        matched = (iou.max(axis=1) >= 0.9) & (got.labels[keep_g][iou.argmax(axis=1)] == ref.labels[keep_r])
        assert matched.mean() >= 0.95


@pytest.mark.slow
def test_registration_displacements_agree(tmp_path: Path, shared_data: Path) -> None:
    from deepmia.io import read_image

    model = _copy("hippocampus_registration", tmp_path)
    torch_predictor = load_predictor(model, precision="fp32")
    export_model(torch_predictor.onnx_networks(), model)
    onnx_predictor = load_predictor(model, runtime="onnx")
    images = [read_image(shared_data / "hippocampus" / "images" / f"hippocampus_{i:03d}.nii.gz") for i in (1, 67)]
    fixed, moving = images
    ref = torch_predictor.register(fixed, moving).transform
    got = onnx_predictor.register(fixed, moving).transform
    a, b = (t.displacement().array for t in (ref, got))
    assert np.abs(a - b).max() < 0.05  # mm
    # OpenVINO reads only 4D GridSample: its refusal is a typed error naming the operator and the way round it
    with pytest.raises(ExportError, match=r"GridSample.*--runtime onnx"):
        load_predictor(model, runtime="openvino")
