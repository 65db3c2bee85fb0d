"""Library warnings a user would see from deepmia's own calls are filtered narrowly (deepmia._warnings)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from deepmia._warnings import LIBRARY_WARNINGS, ignore_library_warnings


def test_registration_training_step_raises_no_library_warning():
    """MONAI's Warp (grid_sample notice) and BendingEnergyLoss (list indexing) warned on every training run."""
    from deepmia.tasks.register.plan import RegistrationPlan
    from deepmia.tasks.register.train import _train_step

    class Shift(torch.nn.Module):
        def forward(self, moving, fixed):
            ddf = torch.zeros(moving.shape[0], 3, *moving.shape[2:], requires_grad=True) + 0.1
            return moving, ddf

    moving = torch.rand(1, 1, 8, 8, 8)
    labels = torch.zeros(1, 3, 8, 8, 8)
    labels[:, 1, 2:6, 2:6, 2:6] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step = _train_step(RegistrationPlan(grid_shape=[8, 8, 8], lncc_kernel=3))
        loss = step(Shift(), (moving, moving, labels, labels))
    assert torch.isfinite(loss)


def test_occlusion_map_raises_no_library_warning():
    from deepmia.explain.saliency import saliency_map

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = saliency_map(model, torch.rand(1, 1, 8, 8), method="occlusion", class_index=1, activation="softmax")
    assert out.shape == (8, 8) and np.isfinite(out).all()


def test_the_filters_are_narrow():
    """Only the listed messages from the listed modules: another warning of the same library still shows."""
    assert all(module.startswith(r"monai\.") for _, _, module in LIBRARY_WARNINGS)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_library_warnings()  # in front of 'always'
        warnings.warn_explicit("Using a non-tuple sequence for multidimensional indexing", UserWarning,
                               "deform.py", 1, module="monai.losses.deform")
        warnings.warn_explicit("something new", UserWarning, "deform.py", 2, module="monai.losses.deform")
        warnings.warn_explicit("Using a non-tuple sequence for multidimensional indexing", UserWarning,
                               "mine.py", 3, module="deepmia.nn.mine")
    assert [(str(w.message), w.lineno) for w in seen] == [
        ("something new", 2), ("Using a non-tuple sequence for multidimensional indexing", 3)]


def test_the_cli_installs_the_filters(capsys):
    from deepmia.cli.main import main

    with warnings.catch_warnings():
        assert main(["--version"]) == 0
        with pytest.warns(UserWarning, match="something new"):  # others pass
            warnings.warn_explicit("something new", UserWarning, "deform.py", 2, module="monai.losses.deform")
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn_explicit("Using a non-tuple sequence for multidimensional indexing", UserWarning,
                                   "deform.py", 1, module="monai.losses.deform")
        assert seen == []
