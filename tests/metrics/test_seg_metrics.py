"""Segmentation metrics: analytic spheres, MONAI cross-check, empty masks, invariants, accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.metrics.segmentation import (
    SegmentationAccumulator,
    binary_segmentation_metrics,
    segmentation_metrics,
)


def ball(shape, spacing, centre_mm, radius_mm):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.0)])
def test_concentric_spheres_have_known_distances(spacing):
    shape = (64, 64, 40)
    centre = [n * s / 2 for n, s in zip(shape, spacing, strict=True)]
    outer, inner = ball(shape, spacing, centre, 20.0), ball(shape, spacing, centre, 16.0)
    s = binary_segmentation_metrics(inner, outer, spacing=spacing, tolerance_mm=1.0)
    # every surface point is 4 mm from the other sphere, up to one voxel of discretisation
    assert s.assd == pytest.approx(4.0, abs=max(spacing))
    assert s.hd95 == pytest.approx(4.0, abs=max(spacing))
    expected_dice = 2 * 16**3 / (16**3 + 20**3)
    assert s.dice == pytest.approx(expected_dice, abs=0.02)
    assert s.iou == pytest.approx(expected_dice / (2 - expected_dice), abs=0.02)
    assert s.nsd < 0.1  # tolerance well below the 4 mm gap
    loose = binary_segmentation_metrics(inner, outer, spacing=spacing, tolerance_mm=4.0 + 2 * max(spacing))
    assert loose.nsd == pytest.approx(1.0)


def test_shifted_sphere_hausdorff_equals_shift():
    spacing = (1.0, 1.0, 1.5)
    shape = (60, 60, 40)
    a = ball(shape, spacing, (30, 30, 30), 15.0)
    b = ball(shape, spacing, (36, 30, 30), 15.0)  # 6 mm along x
    s = binary_segmentation_metrics(a, b, spacing=spacing, percentile=100)
    assert s.hd95 == pytest.approx(6.0, abs=1.0)
    s95 = binary_segmentation_metrics(a, b, spacing=spacing)
    assert 0 < s95.hd95 <= s.hd95
    assert 0 < s95.assd < s95.hd95


def _random_blobs(rng, shape, n_labels):
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    edges = np.quantile(noise, np.linspace(0.55, 0.95, n_labels + 1))
    return np.digitize(noise, edges[:-1]).astype(np.uint8) * (noise > edges[0])


@pytest.mark.parametrize("ndim", [2, 3])
def test_matches_monai_on_random_shapes_with_anisotropic_spacing(ndim):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(ndim)
    shape = (40, 36, 24)[:ndim]
    spacing = (0.7, 1.1, 2.5)[:ndim]
    gt, pred = _random_blobs(rng, shape, 2), _random_blobs(rng, shape, 2)
    pred[gt == 2] = np.where(rng.random(np.count_nonzero(gt == 2)) < 0.7, 2, pred[gt == 2])
    ours = segmentation_metrics(pred, gt, spacing=spacing, labels=[1, 2], tolerance_mm=1.5)

    def onehot(x):
        return torch.as_tensor(np.stack([x == k for k in range(3)])[None].astype(np.float32))

    p, g = onehot(pred), onehot(gt)
    hd = compute_hausdorff_distance(p, g, percentile=95, spacing=list(spacing)).numpy()[0]
    asd = compute_average_surface_distance(p, g, symmetric=True, spacing=list(spacing)).numpy()[0]
    nsd = compute_surface_dice(p, g, class_thresholds=[1.5, 1.5], spacing=list(spacing)).numpy()[0]
    for j, label in enumerate([1, 2]):
        assert ours[label].hd95 == pytest.approx(hd[j], rel=1e-5)
        assert ours[label].assd == pytest.approx(asd[j], rel=1e-5)
        assert ours[label].nsd == pytest.approx(nsd[j], rel=1e-5)


def test_empty_masks_follow_documented_conventions():
    empty, full = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    full[2:6, 2:6] = 1
    both = binary_segmentation_metrics(empty, empty, spacing=1.0)
    assert (both.dice, both.iou, both.nsd, both.hd95, both.assd) == (1.0, 1.0, 1.0, 0.0, 0.0)
    assert both.pred_empty and both.gt_empty
    missed = binary_segmentation_metrics(empty, full, spacing=1.0)
    assert missed.dice == 0 and missed.hd95 == np.inf and missed.pred_empty and not missed.gt_empty
    spurious = binary_segmentation_metrics(full, empty, spacing=1.0)
    assert spurious.dice == 0 and spurious.assd == np.inf and spurious.gt_empty and not spurious.pred_empty


def test_padding_invariance_and_symmetry():
    rng = np.random.default_rng(3)
    gt, pred = _random_blobs(rng, (30, 30, 20), 1), _random_blobs(rng, (30, 30, 20), 1)
    gt[0, :, :] = 1  # touches the border: padding must not change its surface
    spacing = (1.0, 0.5, 2.0)
    a = binary_segmentation_metrics(pred, gt, spacing=spacing)
    padded = binary_segmentation_metrics(np.pad(pred, 3), np.pad(gt, 3), spacing=spacing)
    b = binary_segmentation_metrics(gt, pred, spacing=spacing)
    for name in ("dice", "iou", "hd95", "assd", "nsd"):
        assert getattr(a, name) == pytest.approx(getattr(padded, name))
        assert getattr(a, name) == pytest.approx(getattr(b, name))


def test_bad_input_is_refused():
    with pytest.raises(InvalidArgumentError, match="shape"):
        segmentation_metrics(np.zeros((4, 4), int), np.zeros((5, 4), int), spacing=1.0)
    with pytest.raises(InvalidArgumentError, match="dtype"):
        segmentation_metrics(np.zeros((4, 4), float), np.zeros((4, 4), int), spacing=1.0)
    with pytest.raises(InvalidArgumentError, match="spacing"):
        segmentation_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int), spacing=(1.0, -1.0))


def test_accumulator_excludes_empty_cases_explicitly():
    gt = np.zeros((20, 20), np.uint8)
    gt[4:12, 4:12] = 1
    pred = gt.copy()
    pred[4:12, 12:14] = 1
    acc = SegmentationAccumulator({1: "organ", 2: "lesion"}, n_resamples=200)
    acc.update(pred, gt, spacing=(1.0, 1.0), case_id="a")  # lesion absent from both
    missed = gt.copy()
    missed[15:18, 15:18] = 2  # lesion in truth, not predicted
    acc.update(gt, missed, spacing=(1.0, 1.0), case_id="b")
    summary = acc.aggregate()
    lesion = summary["per_class"]["lesion"]
    assert lesion["n_both_empty"] == 1 and lesion["n_one_empty"] == 1
    assert lesion["dice"]["n"] == 1 and lesion["dice"]["mean"] == 0.0
    assert lesion["hd95"]["n"] == 0 and np.isnan(lesion["hd95"]["mean"])
    organ = summary["per_class"]["organ"]
    assert organ["dice"]["n"] == 2
    assert organ["dice"]["mean"] == pytest.approx((2 * 64 / (64 + 80) + 1.0) / 2)
    assert len(acc.rows()) == 4
    acc.reset()
    assert acc.rows() == []


@pytest.mark.shared_data
def test_hippocampus_labels_match_monai(shared_data):
    """Real anisotropic label maps, moved by a smooth deformation, scored by us and by MONAI."""
    pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    from deepmia.io import read_image

    rng = np.random.default_rng(0)
    for path in sorted((shared_data / "hippocampus" / "labels").glob("*.nii.gz"))[:3]:
        img = read_image(path)
        ref = img.array[0].astype(np.uint8)
        field = np.stack([ndimage.gaussian_filter(rng.normal(size=ref.shape), 3) * 20 for _ in range(3)])
        pred = ndimage.map_coordinates(ref, np.indices(ref.shape) + field, order=0, mode="nearest")
        ours = segmentation_metrics(pred, ref, spacing=img.spacing, labels=[1, 2])
        import torch

        onehot = [torch.as_tensor(np.stack([x == k for k in range(3)])[None]) for x in (pred, ref)]
        hd = compute_hausdorff_distance(*onehot, percentile=95, spacing=list(img.spacing))[0].numpy()
        np.testing.assert_allclose([ours[1].hd95, ours[2].hd95], hd, rtol=1e-5)
        assert 0 < ours[1].dice < 1


def test_dice_per_label_agrees_with_the_full_kernel():
    from deepmia.metrics.segmentation import dice_per_label

    rng = np.random.default_rng(5)
    pred = rng.integers(0, 3, size=(12, 10, 8)).astype(np.uint8)
    ref = rng.integers(0, 3, size=(12, 10, 8)).astype(np.uint8)
    got = dice_per_label(pred, ref, [1, 2, 7])
    full = segmentation_metrics(pred, ref, spacing=1.0, labels=[1, 2])
    assert got[1] == pytest.approx(full[1].dice) and got[2] == pytest.approx(full[2].dice)
    assert np.isnan(got[7]) and dice_per_label(pred, ref, [7], both_empty=1.0)[7] == 1.0
