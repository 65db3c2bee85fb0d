"""Training on class-folder datasets as a user imports them: five folds with fewer members (calibration must use
the members that exist), a failure after training keeps the model, colour images train as three channels, and the
named positive (disease) class drives the operating point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY = ["network_params.widths=[8,16,16,32]", "schedule.max_epochs=2", "schedule.batch_size=16", "schedule.threads=1"]


def write_class_folder(root: Path, *, rgb: bool, per_class: int = 25, size: int = 32, seed: int = 0) -> Path:
    """``root/lesion/*.png`` (a bright disc; red only when ``rgb``) and ``root/normal/*.png`` (noise only)."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("lesion", "normal"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(60, 12, (size, size, 3) if rgb else (size, size))
            if cls == "lesion":
                cy, cx = rng.integers(8, size - 8, 2)
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 25
                if rgb:
                    img[disc, 0] += 120
                else:
                    img[disc] += 120
            PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{cls} ({i}).png")
    return root


def import_and_split(src: Path, dst: Path, *, folds: int = 5) -> Path:
    from deepmia.data.dataset import Dataset
    from deepmia.data.importers import import_folder
    from deepmia.data.splits import make_splits

    import_folder(src, dst)
    ds = Dataset.load(dst)
    ds.set_splits(make_splits(ds, folds=folds, test_fraction=0.2, seed=0))
    ds.save()
    return dst


@pytest.fixture(scope="module")
def grey_five_folds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grey")
    return import_and_split(write_class_folder(root / "src", rgb=False), root / "ds")


@pytest.fixture(scope="module")
def grey_model(grey_five_folds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """5 folds, 2 members (a budget gives at most 3): calibration used to stack an empty list for folds 2-4."""
    from deepmia.tasks.classify.train import train

    out = tmp_path_factory.mktemp("grey_model") / "m"
    return out, train(grey_five_folds, out, overrides=[*TINY, "members=2"])


def test_five_folds_with_fewer_members_calibrates_on_the_trained_folds(grey_model: tuple[Path, dict]) -> None:
    from deepmia.tasks.classify.predict import Predictor

    out, metrics = grey_model
    split = json.loads((out / "split.json").read_text())
    assert [m["fold"] for m in split["members"]] == [0, 1] and len(split["folds"]) == 5
    val_trained = {c for k in (0, 1) for c in split["folds"][k]["val"]}
    assert metrics["validation"]["n_cases"] == len(val_trained)
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["calibrated"] is True and cal["temperature"] > 0
    assert Predictor(out).predict_arrays(np.zeros((1, 1, 32, 32), np.float32))["probabilities"].shape == (1, 2)


def test_positive_class_zero_drives_threshold_and_decisions(grey_model: tuple[Path, dict]) -> None:
    """Classes (lesion, normal): the disease is class 0, as BreastMNIST's malignant; it used to be fitted on 1."""
    from deepmia.tasks.classify.predict import Predictor

    out, metrics = grey_model
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["positive_class"] == "lesion" and cal["positive_index"] == 0
    assert json.loads((out / "plan.json").read_text())["positive_class"] == "lesion"
    assert metrics["validation"]["positive_class"] == "lesion"
    assert set(metrics["validation"]["sensitivity_per_class"]) == {"lesion", "normal"}
    p = Predictor(out)
    p.threshold = 0.3
    prob = np.array([[0.4, 0.6], [0.2, 0.8], [0.9, 0.1]])
    assert p.decide(prob).tolist() == [0, 1, 0]  # lesion whenever P(lesion) >= 0.3


def test_positive_class_rule_and_declared() -> None:
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks.classify.plan import positive_class_of

    assert positive_class_of(["malignant", "normal, benign"]) == "malignant"  # BreastMNIST
    assert positive_class_of(["benign", "malignant", "normal"]) == "malignant"  # BUSI
    assert positive_class_of(["normal", "pneumonia"]) == "pneumonia"
    assert positive_class_of(["vessel", "aneurysm"]) == "aneurysm"  # no rule applies: class 1
    assert positive_class_of(["a", "b", "c"]) is None  # multi-class without a negative name: argmax
    assert positive_class_of(["a", "b"], multi_label=True) is None
    assert positive_class_of(["malignant", "normal, benign"], declared="normal, benign") == "normal, benign"
    with pytest.raises(InvalidArgumentError, match="did you mean 'malignant'"):
        positive_class_of(["malignant", "benign"], declared="malignnt")


def test_cli_positive_class_and_unbroken_result_lines(grey_five_folds: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``--positive-class`` wins over the rule; result lines with a long path are not broken at 80 columns."""
    from deepmia.cli.main import main

    out = tmp_path / ("model_with_a_long_folder_name_" * 3)
    args = [a for o in [*TINY, "members=1", "schedule.max_epochs=1"] for a in ("--set", o)]
    assert main(["train", "classify", "--dataset", str(grey_five_folds), "--out", str(out),
                 "--positive-class", "normal", *args]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "temperature" in x)
    assert line.endswith(str(out)) and "on P(normal)" in line
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["positive_class"] == "normal" and cal["positive_index"] == 1
    ev = tmp_path / ("evaluation_in_a_long_folder_name_" * 3)
    assert main(["evaluate", "classify", str(out), "--dataset", str(grey_five_folds), "--out", str(ev)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "ECE" in x)
    assert line.endswith(str(ev)) and "before temperature scaling" in line
    assert json.loads((ev / "metrics.json").read_text())["positive_class"] == "normal"


def test_calibration_cases_name_only_trained_members() -> None:
    from deepmia.tasks.classify.train import calibration_cases

    folds = [{"train": [], "val": [f"f{k}a", f"f{k}b"]} for k in range(5)]
    members = [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}, {"fold": 2, "seed": 2}]
    ids, subsets = calibration_cases(folds, members)
    assert ids == ["f0a", "f0b", "f1a", "f1b", "f2a", "f2b"]
    assert subsets == [[0], [0], [1], [1], [2], [2]]
    assert calibration_cases(folds[:1], members) == (["f0a", "f0b"], None)


def test_sample_logits_without_members_is_a_clear_error() -> None:
    import torch

    from deepmia.engine.uncertainty import sample_logits
    from deepmia.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="at least one ensemble member"):
        sample_logits([], lambda m, x, t: m(x), torch.zeros(1, 1, 4, 4))


def test_a_failure_after_training_keeps_the_model(grey_five_folds: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from deepmia.tasks.classify import train as train_module
    from deepmia.tasks.classify.predict import Predictor

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("late failure")

    monkeypatch.setattr(train_module, "calibrate", broken)
    out = tmp_path / "m"
    messages: list[str] = []
    with pytest.raises(RuntimeError, match="late failure"):
        train_module.train(grey_five_folds, out, overrides=[*TINY, "members=1", "schedule.max_epochs=1"],
                           progress=messages.append)
    for name in ("plan.json", "split.json", "calibration.json", "fold_0/model_best.pt"):
        assert (out / name).exists(), name
    assert any("saved" in m and str(out) in m for m in messages)
    p = Predictor(out)
    assert p.temperature == 1.0 and len(p.models) == 1


def test_rgb_class_folder_trains_as_three_channels(tmp_path: Path) -> None:
    """An RGB folder used to fail with '3 channel(s), but the model takes 1'."""
    from deepmia.tasks.classify.predict import Predictor
    from deepmia.tasks.classify.train import train

    src = write_class_folder(tmp_path / "src", rgb=True, per_class=15)
    ds = import_and_split(src, tmp_path / "ds", folds=3)
    out = tmp_path / "m"
    train(ds, out, overrides=[*TINY, "members=1", "schedule.max_epochs=1"])
    plan = json.loads((out / "plan.json").read_text())
    assert plan["channels"] == ["image[0]", "image[1]", "image[2]"]
    assert len(plan["normalization"]["mean"]) == 3
    report = Predictor(out).predict_path(src / "lesion", tmp_path / "pred")
    assert report["predicted"] == 15 and not report["skipped"]


def test_dataset_json_positive_class_is_checked_and_planned(grey_five_folds: Path) -> None:
    from deepmia.data.dataset import Dataset
    from deepmia.errors import DatasetError
    from deepmia.tasks.classify.train import plan_dataset

    ds = Dataset.load(grey_five_folds)
    with pytest.raises(DatasetError, match="positive_class 'tumour' is not one of the classes"):
        Dataset.create(ds.root, name="x", task="classification", channels=ds.spec.channels, labels=["lesion", "normal"],
                       positive_class="tumour")
    ds.spec = ds.spec.model_copy(update={"positive_class": "normal"})
    assert plan_dataset(ds).positive_class == "normal"  # dataset.json's choice wins over the rule
    assert plan_dataset(ds, positive_class="lesion").positive_class == "lesion"  # the user's over dataset.json's


@pytest.mark.slow
def test_time_budget_covers_the_whole_command(grey_five_folds: Path, tmp_path: Path) -> None:
    """Planning, speed measurement, training and calibration together end within the budget (it used to cover
    training only: 10m ran 12m22s)."""
    import time

    from deepmia.tasks.classify.train import train

    budget = 30.0
    t = time.perf_counter()
    metrics = train(grey_five_folds, tmp_path / "m", time_budget_s=budget, overrides=["schedule.threads=1"])
    elapsed = time.perf_counter() - t
    assert metrics["training"]["total_seconds"] < budget - 5  # time was kept for planning and calibration
    assert elapsed <= budget + 10, f"{elapsed:.1f} s for a {budget:.0f} s budget"  # loose: a shared machine
