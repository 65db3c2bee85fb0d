"""The deletion sanity check for occlusion-sensitivity maps on real PneumoniaMNIST test images (its own file: the
maps take 169 forward passes per image)."""

from __future__ import annotations

import pytest

from deepmia.explain.saliency import deletion_drops
from tests.explain.conftest import passes_deletion_check


@pytest.mark.slow
def test_filling_the_occlusion_highlighted_voxels_lowers_probability_more(pneumonia_test: tuple) -> None:
    predictor, x, _, predicted = pneumonia_test
    # the first 30 of the 60 images: p was 9e-10 on them (169 forward passes an image make the 60 cost two minutes)
    top, shifted = deletion_drops(predictor.models[0], x[:30], predicted[:30], method="occlusion", fraction=0.1)
    assert passes_deletion_check(top, shifted, "occlusion")
