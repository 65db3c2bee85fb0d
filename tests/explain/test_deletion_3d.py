"""The deletion sanity check in 3D: Grad-CAM of the shipped AdrenalMNIST3D model on real hyperplasia test volumes.

The volumes are binary gland masks and the model's raw argmax is "normal" for nearly every case, so "normal" (the
absence of hyperplasia) has no region to delete; the check explains "hyperplasia" on the first 30 hyperplasia test
cases (20: a 28^3 Grad-CAM map plus nine forward passes take one to three seconds per volume on one core; on the first
15, p was 1.7e-3).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepmia.explain.saliency import deletion_drops
from tests.explain.conftest import load_test_cases, passes_deletion_check


@pytest.mark.slow
def test_filling_the_gradcam_highlighted_voxels_lowers_probability_more_in_3d(shared_data: Path) -> None:
    predictor, x, labels, _ = load_test_cases(shared_data, "adrenalmnist3d", 400)  # the whole test set (298)
    x = x[labels == 1][:20]
    top, shifted = deletion_drops(predictor.models[0], x, [1] * len(x), method="gradcam", fraction=0.1)
    assert passes_deletion_check(top, shifted, "gradcam 3D")
