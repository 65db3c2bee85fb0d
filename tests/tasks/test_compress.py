"""deepmia compress: distilled and pruned classifiers and a pruned + distilled U-Net on tiny synthetic data predict like
any model directory, are smaller, carry a card naming their teacher; pruning removes the stated fraction of channels
and is exact when those channels were zero; bad options and unsupported networks are typed errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepmia.errors import InvalidArgumentError
from tests.tasks.segment.conftest import TINY as TINY_UNET
from tests.tasks.segment.conftest import _write_dataset

TINY = ["network_params.widths=[8,16,16,32]", "schedule.max_epochs=2", "schedule.batch_size=16", "schedule.threads=1"]


def _class_folder(root: Path, per_class: int = 20, size: int = 28) -> Path:
    """``root/lesion/*.png`` (a bright disc on noise) and ``root/normal/*.png`` (noise only)."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for cls in ("lesion", "normal"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = rng.normal(60, 12, (size, size))
            if cls == "lesion":
                cy, cx = rng.integers(8, size - 8, 2)
                img[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] += 120
            PILImage.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{cls}_{i}.png")
    return root


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained ResNet classifier and its dataset."""
    from deepmia.data.dataset import Dataset
    from deepmia.data.importers import import_folder
    from deepmia.data.splits import make_splits
    from deepmia.report.model_card import write_model_card
    from deepmia.tasks.classify.train import train

    root = tmp_path_factory.mktemp("compress_cls")
    ds_dir = root / "ds"
    import_folder(_class_folder(root / "src"), ds_dir)
    ds = Dataset.load(ds_dir)
    ds.set_splits(make_splits(ds, folds=2, test_fraction=0.2, seed=0))
    ds.save()
    train(ds_dir, root / "teacher", overrides=[*TINY, "members=1"])
    write_model_card(root / "teacher", task="classify", dataset=Dataset.load(ds_dir))
    return root / "teacher", ds_dir


def _options(**kw):
    from deepmia.tasks.compress import CompressOptions

    return CompressOptions(**{"time_budget_s": 20.0, **kw})


def _params(model_dir: Path) -> int:
    from deepmia.tasks import load_predictor

    return sum(p.numel() for p in load_predictor(model_dir).models[0].parameters())


def test_distilled_classifier_predicts_is_smaller_and_has_a_card(teacher, tmp_path) -> None:
    from deepmia.tasks import load_predictor
    from deepmia.tasks.compress import compress

    model_dir, ds_dir = teacher
    out = tmp_path / "small"
    record = compress(model_dir, out, ds_dir, _options(distill=True), say=lambda m: None)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["network_params"]["widths"] == [4, 8, 8, 16]  # the rule: every width halved
    assert record["student_parameters"] == _params(out) < _params(model_dir) == record["teacher_parameters"]
    assert json.loads((out / "split.json").read_text())["train"] == json.loads((model_dir / "split.json").read_text())[
        "train"]
    report = load_predictor(out).predict_path(ds_dir / "images" / "lesion", tmp_path / "pred")
    assert report["predicted"] == 20
    from deepmia.cli._common import write_card

    write_card(out, "classify", ds_dir)  # as the command does: through the one card writer
    card = (out / "README.md").read_text()
    assert "Compressed model** (distilled)" in card and "`teacher`" in card
    assert "AUROC" in card and (out / "metrics.json").exists() and (out / "calibration.json").exists()


def test_pruned_classifier_removes_the_stated_fraction_of_every_layer(teacher, tmp_path) -> None:
    from deepmia.tasks import load_predictor
    from deepmia.tasks.compress import compress

    model_dir, ds_dir = teacher
    out = tmp_path / "pruned"
    record = compress(model_dir, out, ds_dir, _options(distill=False, prune=0.25), say=lambda m: None)
    big, small = load_predictor(model_dir).models[0], load_predictor(out).models[0]
    convs = [(n, m.out_channels) for n, m in big.named_modules() if isinstance(m, torch.nn.Conv2d)]
    kept = dict((n, m.out_channels) for n, m in small.named_modules() if isinstance(m, torch.nn.Conv2d))
    assert [kept[n] for n, _ in convs] == [c - round(c * 0.25) for _, c in convs]
    assert record["method"] == "pruned" and record["student_parameters"] < record["teacher_parameters"]
    assert set(record["pruned_channels"]) >= {"stem", "stage2", "stage3", "stage4"}


def _zero_some_channels(net: torch.nn.Module, ratio: float) -> None:
    """Zero the first ``ratio`` of every channel group: its filters, biases and norm affine parameters."""
    from deepmia.engine.prune import kept_channels, resnet_groups

    state = net.state_dict()
    with torch.no_grad():
        for g in resnet_groups(state):
            gone = g.size - kept_channels(g.size, ratio)
            for name in g.writers:
                if not name.endswith(("running_mean", "running_var")):
                    state[name][:gone] = 0
    net.load_state_dict(state)


def test_pruning_zero_channels_keeps_the_output_exactly() -> None:
    """Surgery that sliced a reader with the wrong indices (or forgot one) would change the logits."""
    from deepmia.engine.prune import prune_state_dict, resnet_groups
    from deepmia.nn import build_network

    torch.manual_seed(0)
    for dims, small_input in ((2, True), (3, False)):
        kw = {"spatial_dims": dims, "in_channels": 1, "out_channels": 3, "depth": 18, "small_input": small_input}
        net = build_network("resnet", widths=[8, 16, 16, 32], **kw).eval()
        for m in net.modules():  # non-trivial statistics so every norm parameter matters
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        _zero_some_channels(net, 0.5)
        pruned, kept = prune_state_dict(net.state_dict(), resnet_groups(net.state_dict()), 0.5)
        small = build_network("resnet", widths=[4, 8, 8, 16], **kw).eval()
        small.load_state_dict(pruned)
        x = torch.randn(2, 1, *([20] * dims))
        torch.testing.assert_close(small(x), net(x), rtol=1e-4, atol=1e-5)
        assert kept["stage4"] == list(range(16, 32))  # the zeroed channels are the ones removed
        shuffled = {k: v.flip(0) if k.endswith("layer4.1.conv2.weight") else v for k, v in pruned.items()}
        small.load_state_dict(shuffled)  # a wrong surgery: the output changes
        assert not torch.allclose(small(x), net(x), atol=1e-3)


def test_pruning_a_unet_with_zero_channels_keeps_every_output_exactly() -> None:
    """Skip connections (concatenated after the upsampled channels) and deep supervision heads included."""
    from deepmia.engine.prune import dynunet_groups, kept_channels, prune_state_dict
    from deepmia.nn import build_network

    torch.manual_seed(0)
    kw = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
          "kernels": [[3, 3, 3]] * 3, "deep_supervision": True, "deep_supervision_heads": 1}
    net = build_network("dynunet", filters=[4, 8, 16], **kw)
    state = net.state_dict()
    groups = dynunet_groups(state)
    with torch.no_grad():
        for g in groups:
            for name, dim, _ in g.slices()[:len(g.writers)]:
                state[name].narrow(dim, 0, g.size - kept_channels(g.size, 0.5)).zero_()
    net.load_state_dict(state)
    pruned, _ = prune_state_dict(net.state_dict(), groups, 0.5)
    small = build_network("dynunet", filters=[2, 4, 8], **kw)
    small.load_state_dict(pruned)
    x = torch.randn(2, 1, 16, 16, 16)
    torch.testing.assert_close(small(x), net(x), rtol=1e-4, atol=1e-5)  # training mode: every head's output
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters()) / 3


def test_bad_ratio_and_unsupported_networks_are_typed_errors(teacher, tmp_path, capsys) -> None:
    from deepmia.cli.main import main
    from deepmia.tasks.compress import compress

    model_dir, ds_dir = teacher
    with pytest.raises(InvalidArgumentError, match="between 0 and 1"):
        compress(model_dir, tmp_path / "a", ds_dir, _options(prune=1.5))
    with pytest.raises(InvalidArgumentError, match="nothing to do"):
        compress(model_dir, tmp_path / "a", ds_dir, _options(distill=False))
    with pytest.raises(InvalidArgumentError, match="the output is the model being compressed"):
        compress(model_dir, model_dir, ds_dir, _options())
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "plan.json").write_text("{}")
    with pytest.raises(InvalidArgumentError, match="already a model directory"):
        compress(model_dir, tmp_path / "taken", ds_dir, _options())
    dense = tmp_path / "dense"
    shutil.copytree(model_dir, dense)
    plan = json.loads((dense / "plan.json").read_text())
    plan.update(network="densenet", network_params={"depth": 121})
    (dense / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InvalidArgumentError, match="densenet.*supported: ResNet"):
        compress(dense, tmp_path / "b", ds_dir, _options(prune=0.5))
    seg = tmp_path / "seg"
    seg.mkdir()
    plan = json.loads((Path(__file__).resolve().parents[2] / "deepmia/models/hippocampus/plan.json").read_text())
    plan.update(network="segresnet")
    (seg / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InvalidArgumentError, match="'segresnet' is not supported; supported: DynUNet"):
        compress(seg, tmp_path / "c", ds_dir, _options(prune=0.5))
    code = main(["compress", str(model_dir), "--out", str(tmp_path / "d"), "--dataset", str(ds_dir), "--prune", "1.5"])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_pruned_and_distilled_unet_predicts_and_is_smaller(tmp_path) -> None:
    from deepmia.tasks import load_predictor
    from deepmia.tasks.compress import compress
    from deepmia.tasks.segment.train import train_fold

    spheres = _write_dataset(tmp_path / "spheres")
    teacher_dir = tmp_path / "teacher"
    train_fold(spheres.root, teacher_dir, fold=0, overrides=TINY_UNET, cache=tmp_path / "cache", workers=1,
               log=lambda m: None)
    out = tmp_path / "small"
    record = compress(teacher_dir, out, spheres.root, _options(distill=True, prune=0.5, time_budget_s=3.0),
                      cache=tmp_path / "cache", say=lambda m: None)
    assert json.loads((out / "plan.json").read_text())["network_params"]["filters"] == [2, 4, 8]
    assert record["student_parameters"] < record["teacher_parameters"]
    assert record["method"] == "pruned and distilled" and record["pruned_channels"]["bottleneck.conv2"] == 8
    assert record["validation_dice"] is not None and (out / "fold_0" / "metrics.json").exists()
    result = load_predictor(out).predict(spheres.read_image("case0"))
    assert result.labels.array.shape[1:] == spheres.read_image("case0").spatial_shape
