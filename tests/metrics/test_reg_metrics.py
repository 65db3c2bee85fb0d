"""Registration metrics: Jacobian of identity, linear and folding fields; TRE; inverse consistency; label overlap."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import InvalidArgumentError
from deepmia.metrics.registration import (
    inverse_consistency_error,
    jacobian_determinant,
    jacobian_statistics,
    label_overlap,
    target_registration_error,
)
from deepmia.metrics.segmentation import segmentation_metrics

SPACING = (0.8, 1.2, 2.0)


def test_identity_field_has_unit_determinant_and_no_folds():
    stats = jacobian_statistics(np.zeros((3, 12, 10, 8)), spacing=SPACING)
    assert stats["folding_fraction"] == 0 and stats["mean"] == pytest.approx(1.0) and stats["std"] == pytest.approx(0)


@pytest.mark.parametrize("units", ["mm", "voxel"])
def test_linear_field_gives_analytic_determinant(units):
    rng = np.random.default_rng(0)
    a = np.eye(3) + rng.uniform(-0.3, 0.3, (3, 3))  # phi(x) = A x in mm
    sp = np.array(SPACING)
    idx = np.indices((10, 9, 7)).astype(float)
    x_mm = idx * sp[:, None, None, None]
    u_mm = np.einsum("ij,j...->i...", a - np.eye(3), x_mm)
    field = u_mm if units == "mm" else u_mm / sp[:, None, None, None]
    det = jacobian_determinant(field, spacing=SPACING, units=units)
    np.testing.assert_allclose(det, np.linalg.det(a), rtol=1e-10)


def test_linear_field_2d_and_mm_spacing_matters():
    sp = np.array([0.5, 2.0])
    idx = np.indices((8, 8)).astype(float)
    # u_x = 0.5 * y_mm: a shear, determinant 1 whatever the spacing
    shear = np.stack([0.5 * idx[1] * sp[1], np.zeros((8, 8))])
    np.testing.assert_allclose(jacobian_determinant(shear, spacing=sp), 1.0)
    # u_x = 0.5 * x_mm: a stretch by 1.5 along x
    stretch = np.stack([0.5 * idx[0] * sp[0], np.zeros((8, 8))])
    np.testing.assert_allclose(jacobian_determinant(stretch, spacing=sp), 1.5)
    # the same numbers read as voxels on a different grid give a different stretch: spacing is not ignored
    assert not np.allclose(jacobian_determinant(stretch, spacing=(1.0, 1.0)), 1.5)


def test_folding_field_is_detected():
    n = 32
    x = np.arange(n, dtype=float)
    amp = 3.0 * n / (2 * np.pi)  # derivative amplitude 3 > 1: the map folds where cos(.) < -1/3
    u = np.zeros((3, n, 6, 6))
    u[0] = (amp * np.sin(2 * np.pi * x / n))[:, None, None]
    stats = jacobian_statistics(u, spacing=(1.0, 1.0, 1.0), units="voxel")
    expected = np.mean(1 + 3.0 * np.cos(2 * np.pi * x / n) <= 0)
    assert stats["folding_fraction"] == pytest.approx(expected, abs=2 / n)
    assert stats["folding_fraction"] > 0.3 and stats["n_folding"] > 0 and stats["min"] < 0
    inside = np.zeros((n, 6, 6), bool)
    inside[:4] = True  # cos > 0 there: no folds inside the mask
    assert jacobian_statistics(u, spacing=1.0, units="voxel", mask=inside)["folding_fraction"] == 0


def test_target_registration_error_in_mm_and_voxels():
    fixed = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    moved = np.array([[3.0, 4.0, 0.0], [10.0, 0.0, 1.0]])
    tre = target_registration_error(fixed, moved, spacing=None)
    np.testing.assert_allclose(tre["per_point"], [5.0, 1.0])
    assert tre["mean"] == pytest.approx(3.0) and tre["max"] == pytest.approx(5.0)
    vox = target_registration_error(fixed, moved, spacing=(1.0, 1.0, 2.0))
    np.testing.assert_allclose(vox["per_point"], [5.0, 2.0])
    with pytest.raises(InvalidArgumentError, match="landmarks"):
        target_registration_error(fixed, moved[:1], spacing=None)


def test_inverse_consistency():
    shape = (3, 10, 10, 6)
    t = np.array([1.5, -2.0, 4.0])[:, None, None, None] * np.ones(shape)
    exact = inverse_consistency_error(t, -t, spacing=SPACING)
    assert exact["max"] == pytest.approx(0, abs=1e-6)
    none = inverse_consistency_error(t, np.zeros(shape), spacing=SPACING)
    assert none["mean"] == pytest.approx(np.linalg.norm([1.5, -2.0, 4.0]))
    # a smooth field and a first-order approximate inverse: small but non-zero error
    idx = np.indices(shape[1:]).astype(float)
    u = np.stack([0.4 * np.sin(idx[1] / 3.0), np.zeros(shape[1:]), np.zeros(shape[1:])])
    approx = inverse_consistency_error(u, -u, spacing=1.0, units="voxel")
    assert 0 < approx["mean"] < 0.1


def test_label_overlap_reuses_segmentation_kernel():
    fixed = np.zeros((20, 20, 10), np.uint8)
    fixed[3:9, 3:9, 2:8] = 1
    fixed[11:17, 11:17, 2:8] = 2
    warped = np.roll(fixed, 1, axis=0)
    out = label_overlap(warped, fixed, spacing=SPACING)
    reference = segmentation_metrics(warped, fixed, spacing=SPACING)
    for label in (1, 2):
        assert out["per_label"][label]["dice"] == pytest.approx(reference[label].dice)
        assert out["per_label"][label]["hd95"] == pytest.approx(reference[label].hd95)
    assert out["mean_dice"] == pytest.approx(5 / 6)
    assert out["mean_hd95"] == pytest.approx(SPACING[0])


def test_bad_fields_are_refused():
    with pytest.raises(InvalidArgumentError, match="components first"):
        jacobian_determinant(np.zeros((8, 8, 8, 3)), spacing=1.0)
    with pytest.raises(InvalidArgumentError, match="units"):
        jacobian_determinant(np.zeros((3, 4, 4, 4)), spacing=1.0, units="cm")
    with pytest.raises(InvalidArgumentError, match="spacing"):
        jacobian_determinant(np.zeros((3, 4, 4, 4)), spacing=(1.0, 1.0))


def test_accumulator_summarises_pairs_and_counts_missing_columns():
    from deepmia.metrics.registration import RegistrationAccumulator

    fixed = np.zeros((16, 16, 8), np.uint8)
    fixed[3:9, 3:9, 2:6] = 1
    acc = RegistrationAccumulator([1], n_resamples=100)
    acc.update(spacing=SPACING, warped_label=fixed, fixed_label=fixed, displacement=np.zeros((3, 16, 16, 8)))
    acc.update(spacing=SPACING, warped_label=np.roll(fixed, 2, axis=1), fixed_label=fixed, case_id="shifted")
    out = acc.aggregate()
    assert out["n_pairs"] == 2
    assert out["mean_dice"]["n"] == 2 and out["mean_dice"]["mean"] == pytest.approx((1 + 4 / 6) / 2)
    assert out["folding_fraction"]["n"] == 1 and out["folding_fraction"]["n_nan"] == 1
    assert acc.rows()[1]["case_id"] == "shifted"
    with pytest.raises(InvalidArgumentError, match="nothing to score"):
        acc.update(spacing=SPACING)
