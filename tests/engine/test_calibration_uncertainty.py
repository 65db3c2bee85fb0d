"""Temperature scaling and prediction sampling (MC dropout, TTA, ensembles)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepmia.engine.calibration import fit_temperature, probabilities
from deepmia.engine.uncertainty import mc_dropout, mirror_sets, sample_logits, summarise_samples
from deepmia.errors import InvalidArgumentError
from deepmia.metrics.classification import expected_calibration_error


def test_temperature_recovers_overconfidence_and_lowers_ece() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in probabilities(true_logits)])
    logits = 3.0 * true_logits  # an over-confident model with the right ranking
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(labels, probabilities(logits))[0]
    after = expected_calibration_error(labels, probabilities(logits, temperature=t))[0]
    assert after < before / 2
    with pytest.raises(InvalidArgumentError):
        fit_temperature(logits[:, 0], labels)


def test_multilabel_temperature() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(3000, 2))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(0.5 * z, y, multi_label=True) == pytest.approx(0.5, rel=0.15)


def test_mc_dropout_keeps_batch_norm_in_eval() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    net.eval()
    with mc_dropout(net):
        assert net[2].training and not net[1].training
    assert not net.training and not net[2].training


def test_sampling_counts_and_uncertainty() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(2)).eval()
    x = torch.randn(5, 1, 8, 8)
    net(x)

    def run(m: nn.Module, xi: torch.Tensor, _t: torch.Tensor | None) -> torch.Tensor:
        return m(xi)

    assert mirror_sets([0, 1]) == [(), (0,), (1,)]
    s = sample_logits([net, net], run, x, mirror_axes=[0], mc_samples=3)
    assert s.shape == (2 * 2 * 3, 5, 2)
    _, prob, unc = summarise_samples(s)
    assert np.allclose(prob.sum(1), 1) and (unc > 0).all()
    single = sample_logits([net], run, x)
    assert (summarise_samples(single)[2] == 0).all()
