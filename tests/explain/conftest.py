"""Real test images for the explanation sanity checks: the shipped models and their MedMNIST test sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

MODELS = Path(__file__).resolve().parents[2] / "models"


def load_test_cases(data_dir: Path, dataset: str, n: int) -> tuple[object, torch.Tensor, np.ndarray, np.ndarray]:
    """The shipped model of ``dataset``, its first ``n`` test inputs, their labels and predicted classes."""
    from deepmia.image import Image
    from deepmia.tasks.classify.predict import Predictor

    if not (MODELS / dataset / "plan.json").exists():
        pytest.skip(f"models/{dataset} not trained")
    predictor = Predictor(MODELS / dataset)
    data = np.load(data_dir / "medmnist" / f"{dataset}.npz")
    images, labels = data["test_images"][:n], data["test_labels"][:n, 0]
    # as deepmia's MedMNIST import stores them: 2D through PNG (x along columns), 3D volumes as they are
    arrays = [(im.T if im.ndim == 2 else im)[None].astype(np.float32) for im in images]
    x = torch.from_numpy(np.stack([predictor.prepare(Image(a)) for a in arrays]))
    with torch.no_grad():
        predicted = predictor.models[0].eval()(x).argmax(1).numpy()
    return predictor, x, labels, predicted


def passes_deletion_check(top: np.ndarray, shifted: np.ndarray, label: str) -> bool:
    """One-sided Wilcoxon signed-rank test, per image paired, that filling the salient voxels drops more."""
    from scipy.stats import wilcoxon

    p = wilcoxon(top - shifted, alternative="greater").pvalue
    print(f"{label}: drop {top.mean():.3f} at the top 10% vs {shifted.mean():.3f} shifted, p = {p:.1e}")
    return bool(top.mean() > shifted.mean() and p < 0.01)


@pytest.fixture(scope="session")
def pneumonia_test(shared_data: Path) -> tuple[object, torch.Tensor, np.ndarray, np.ndarray]:
    """The first 60 PneumoniaMNIST test images of both classes, with the shipped model's predictions."""
    return load_test_cases(shared_data, "pneumoniamnist", 60)
