"""The deletion sanity check for occlusion-sensitivity maps on real PneumoniaMNIST test images (its own file: the
maps take 169 forward passes per image)."""

from __future__ import annotations

import pytest

from deepmia.explain.saliency import deletion_drops
from tests.explain.conftest import passes_deletion_check


@pytest.mark.slow
def test_filling_the_occlusion_highlighted_voxels_lowers_probability_more(pneumonia_test: tuple) -> None:
    predictor, x, _, predicted = pneumonia_test
    top, shifted = deletion_drops(predictor.models[0], x, predicted, method="occlusion", fraction=0.1)
    assert passes_deletion_check(top, shifted, "occlusion")
