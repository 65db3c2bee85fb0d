"""2D RGB photographs end to end: pairs import, plan (one network input per colour), train, predict with
probabilities, evaluate inside the field of view."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.data.importers import import_dataset
from deepmia.data.stats import fingerprint
from deepmia.engine.batch import run_batch
from deepmia.io import read_image
from deepmia.tasks.segment.evaluate import evaluate_dirs
from deepmia.tasks.segment.plan import make_plan
from deepmia.tasks.segment.predict import Predictor
from deepmia.tasks.segment.preprocess import apply_normalization
from deepmia.tasks.segment.train import train_fold


@pytest.fixture()
def rgb_dataset(tmp_path):
    """Four training and two test 40 x 36 RGB photos with 0/255-labelled lines (darkest in green, like vessels)
    and a round field of view."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    yy, xx = np.mgrid[:36, :40]
    for i in range(6):
        part = src / ("train" if i < 4 else "test")
        for d in ("img", "ann", "fov"):
            (part / d).mkdir(parents=True, exist_ok=True)
        ann = np.zeros((36, 40), np.uint8)
        ann[6 + 3 * i : 8 + 3 * i, 4:36] = 255
        ann[4:32, 10 + 4 * i : 12 + 4 * i] = 255
        photo = rng.normal(150, 10, (36, 40, 3))
        photo[ann > 0] -= [20, 80, 10]
        fov = ((yy - 18) ** 2 + (xx - 20) ** 2 < 300).astype(np.uint8) * 255
        PILImage.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(part / "img" / f"{i:02d}.tif")
        PILImage.fromarray(ann).save(part / "ann" / f"{i:02d}_manual.gif")
        PILImage.fromarray(fov).save(part / "fov" / f"{i:02d}_mask.gif")
    patterns = [f"{prefix}{kind}={part}/{folder}/{{id}}{suffix}" for prefix, part in (("", "train"), ("test_", "test"))
                for kind, folder, suffix in (("image", "img", ".tif"), ("label", "ann", "_manual.gif"),
                                             ("roi", "fov", "_mask.gif"))]
    report = import_dataset("pairs", src, tmp_path / "ds", patterns=patterns, labels="0=background,1=vessel",
                            value_map="255=1", folds=2)
    return report.dataset


def test_plan_gives_one_input_per_colour_and_normalises_each(rgb_dataset):
    plan = make_plan(rgb_dataset, fingerprint(rgb_dataset), machine={"cores": 2, "gpu": None}, time_budget_s=600)
    assert plan.spatial_dims == 2 and plan.in_channels == 3
    assert plan.channels == ["RGB[0]", "RGB[1]", "RGB[2]"]
    assert len(plan.normalization) == 3 and len(plan.network_params["strides"][0]) == 2
    image = rgb_dataset.read_image(rgb_dataset.cases[0])
    out = apply_normalization(image.array, plan)
    np.testing.assert_allclose(out.reshape(3, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(out.reshape(3, -1).std(1), 1, atol=1e-3)


def test_train_predict_probabilities_and_evaluate_in_the_roi(rgb_dataset, tmp_path, tiny_2d):
    model = tmp_path / "model"
    train_fold(rgb_dataset.root, model, overrides=tiny_2d, cache=tmp_path / "cache", workers=1, log=lambda m: None)
    plan = json.loads((model / "plan.json").read_text())
    assert plan["spatial_dims"] == 2 and len(plan["channels"]) == 3
    split = json.loads((model / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == ["00", "01", "02", "03"] and split["test"] == ["04", "05"]
    root = rgb_dataset.root
    sources = sorted((root / "imagesTs").iterdir())
    predictor = Predictor(model, tta=False, postprocess=False, probabilities=True)
    report = run_batch(predictor, root / "imagesTs", tmp_path / "pred", formats=("probabilities",))
    assert report.skipped == [] and len(report.predicted) == len(sources)
    for src in sources:
        labels = read_image(tmp_path / "pred" / src.name, kind="label")
        probs = read_image(tmp_path / "pred" / "probabilities" / src.name)
        assert probs.shape == (2, 40, 36) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.array.sum(0), 1, atol=2e-3)  # float16 accumulation
        np.testing.assert_array_equal(labels.array[0], probs.array.argmax(0))
    summary = evaluate_dirs(
        tmp_path / "pred", root / "labelsTs", mask_dir=root / "masksTs",
        prob_dir=tmp_path / "pred" / "probabilities", n_resamples=50,
        labels={1: "vessel"},
    )
    assert summary["n_cases"] == 2 and 0 <= summary["pooled"]["vessel"]["auc"]["value"] <= 1


@pytest.mark.shared_data
def test_drive_plan_is_2d_rgb_with_a_patch_inside_the_image(tmp_path, shared_data):
    patterns = ["image=training/images/{id}_training.tif", "label=training/1st_manual/{id}_manual1.gif"]
    ds = import_dataset("pairs", shared_data / "drive", tmp_path / "drive", patterns=patterns, limit=4,
                        labels="0=background,1=vessel", value_map="255=1", channels=["RGB:OP"], folds=2).dataset
    plan = make_plan(ds, fingerprint(ds), machine={"cores": 2, "gpu": None}, time_budget_s=2700)
    assert plan.spatial_dims == 2 and plan.in_channels == 3 and plan.target_spacing == [1.0, 1.0]
    assert {n.scheme for n in plan.normalization} == {"rgb"}
    assert all(64 <= p <= s for p, s in zip(plan.patch_size, (565, 584), strict=True))
    pools = np.prod(plan.network_params["strides"], axis=0)
    assert all(p % k == 0 for p, k in zip(plan.patch_size, pools, strict=True))


def test_planning_never_reads_the_held_out_test_cases(rgb_dataset, monkeypatch):
    import deepmia.data.stats as stats
    from deepmia.tasks.segment.train import plan_dataset

    test_ids = set(rgb_dataset.splits.test)
    assert len(test_ids) == 2
    seen: list[str] = []
    real = stats.fingerprint

    def spy(dataset, **kw):
        seen.extend(c.id for c in dataset.cases)
        return real(dataset, **kw)

    monkeypatch.setattr(stats, "fingerprint", spy)
    plan_dataset(rgb_dataset)
    assert len(seen) == 4 and not test_ids & set(seen)
