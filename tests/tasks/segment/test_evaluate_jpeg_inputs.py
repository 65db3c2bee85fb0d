"""JPEG photographs (CHASE_DB1-style, 25 dpi) through train, predict and evaluate: label maps are lossless PNG
with label values only, and the JPEG's dpi is not a spacing, so predictions sit on the references' grid."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from deepmia.data.importers import import_dataset
from deepmia.engine.batch import run_batch
from deepmia.io import read_image, spacing_known
from deepmia.tasks.segment.evaluate import evaluate_dirs
from deepmia.tasks.segment.predict import Predictor
from deepmia.tasks.segment.train import train_fold


def _jpeg_dataset(root):
    """Four training and two test 40 x 36 RGB JPEGs at 25 dpi with two-label PNG annotations (0/128/255)."""
    rng = np.random.default_rng(0)
    src = root / "src"
    for i in range(6):
        part = src / ("train" if i < 4 else "test")
        for d in ("img", "ann"):
            (part / d).mkdir(parents=True, exist_ok=True)
        ann = np.zeros((36, 40), np.uint8)
        ann[6 + 3 * i : 10 + 3 * i, 4:36] = 255
        ann[4:32, 10 + 4 * i : 14 + 4 * i] = 128
        photo = rng.normal(150, 10, (36, 40, 3))
        photo[ann == 255] -= [20, 80, 10]
        photo[ann == 128] += [60, 10, 40]
        PILImage.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(part / "img" / f"{i:02d}.jpg", dpi=(25, 25))
        PILImage.fromarray(ann).save(part / "ann" / f"{i:02d}_label.png")
    patterns = [f"{prefix}{kind}={part}/{folder}/{{id}}{suffix}" for prefix, part in (("", "train"), ("test_", "test"))
                for kind, folder, suffix in (("image", "img", ".jpg"), ("label", "ann", "_label.png"))]
    return import_dataset("pairs", src, root / "ds", patterns=patterns, labels="0=background,1=vessel,2=disc",
                          value_map="255=1,128=2", folds=2).dataset


def test_jpeg_inputs_give_lossless_png_label_maps_on_the_reference_grid(tmp_path, tiny_2d):
    dataset = _jpeg_dataset(tmp_path)
    model = tmp_path / "model"
    train_fold(dataset.root, model, overrides=tiny_2d, cache=tmp_path / "cache", workers=1, log=lambda m: None)
    sources = sorted((tmp_path / "src" / "test" / "img").iterdir())
    assert not spacing_known(read_image(sources[0]))  # 25 dpi is a print resolution
    report = run_batch(Predictor(model, tta=False, postprocess=False), sources[0].parent, tmp_path / "pred")
    assert report.skipped == [] and len(report.predicted) == len(sources)
    for src in sources:
        written = tmp_path / "pred" / f"{src.stem}.png"
        assert not (tmp_path / "pred" / src.name).exists()  # never a lossy JPEG label map
        with PILImage.open(written) as pic:
            assert pic.format == "PNG"  # lossless
            values = set(np.unique(np.asarray(pic)).tolist())
        assert values <= {0, 1, 2}  # label values only (a JPEG would blur edges into other values)
        labels = read_image(written, kind="label")
        assert labels.kind == "label" and not spacing_known(labels) and labels.spacing == (1.0, 1.0)
    refs = tmp_path / "refs"
    refs.mkdir()
    for src in sources:  # the references as plain PNGs of label values, named like the inputs
        ann = np.asarray(PILImage.open(tmp_path / "src" / "test" / "ann" / f"{src.stem}_label.png"))
        ref = np.select([ann == 255, ann == 128], [1, 2], 0).astype(np.uint8)
        PILImage.fromarray(ref).save(refs / f"{src.stem}.png")
    summary = evaluate_dirs(tmp_path / "pred", refs, n_resamples=10)  # same grid: not refused
    assert summary["n_cases"] == len(sources) and summary["missing"] == []
