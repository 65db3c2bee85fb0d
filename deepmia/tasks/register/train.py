"""Training a learned registration model (``deepmia train register``) with the shared engine's Trainer.

See :mod:`deepmia.tasks.register.plan` for the rules. Cases are split by patient into train / val / test
(80/10/10, seeded; ``split.json``); test cases are never seen in training, so benchmarks draw pairs from them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError
from deepmia.image import Image
from deepmia.tasks.register.classical import normalise_intensity, register_images
from deepmia.tasks.register.learned import MULTIPLE
from deepmia.tasks.register.plan import RegistrationPlan

__all__ = ["train_registration", "split_cases", "to_template"]


def split_cases(dataset: Dataset, *, seed: int) -> dict[str, list[str]]:
    """Train / val / test case ids (80/10/10 of the patients, seeded)."""
    patients = sorted(dataset.patients)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n = len(patients)
    n_val = n_test = max(1, n // 10)
    sides = {"test": patients[:n_test], "val": patients[n_test : n_test + n_val], "train": patients[n_test + n_val :]}
    return {side: sorted(c for p in ps for c in dataset.patients[p]) for side, ps in sides.items()}


def _template_grid(image: Image) -> Image:
    shape = [n + (-n) % MULTIPLE for n in image.spatial_shape]
    return Image(np.zeros((1, *shape), np.uint8), image.affine, kind="label")


def to_template(dataset: Dataset, case_id: str, template: Image, grid: Image) -> tuple[np.ndarray, np.ndarray]:
    """A case affinely registered to the template, resampled onto the padded template grid: image in [0, 1], labels."""
    image, label = dataset.read_image(case_id), None
    label = dataset.read_label(case_id, image=image)
    result = register_images(
        template, image, method="affine", metric="ncc", levels=2, iterations=100, check_divergence=False
    )
    warped = result.transform.apply(normalise_intensity(image), reference=grid)
    warped_label = result.transform.apply(label, reference=grid)
    return warped.array.astype(np.float32), warped_label.array.astype(np.int64)


def _pairs(images: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> Iterator[tuple[Any, ...]]:
    import torch

    rng = np.random.default_rng(seed)
    n = len(images)
    while True:
        i = rng.integers(0, n, batch)
        j = (i + rng.integers(1, n, batch)) % n  # never a case with itself
        yield tuple(torch.from_numpy(a) for a in (images[i], images[j], labels[i], labels[j]))


def train_registration(
    dataset_dir: str | PathLike[str],
    model_dir: str | PathLike[str],
    *,
    time_budget_s: float = 600.0,
    max_epochs: int = 40,
    dice_weight: float = 1.0,
    max_train_cases: int = 120,
    steps_per_epoch: int = 20,
    network_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Prepare the data, train VoxelMorph, write the model folder; returns the run summary.

    Model folder: ``plan.json``, ``fold_0/`` (the Trainer's checkpoint, best weights and logs), ``split.json``,
    ``metrics.json`` and ``README.md``.

    Raises:
        DatasetError: The dataset has fewer than 10 cases with label maps, or images that are not 3D.
    """
    import torch
    from monai.losses import BendingEnergyLoss, DiceLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import Warp

    from deepmia.engine.runtime import configure_threads, seed_everything
    from deepmia.engine.trainer import Trainer
    from deepmia.nn import build_network

    start = time.perf_counter()
    configure_threads()
    seed_everything(seed)
    dataset = Dataset.load(dataset_dir)
    cases = [c for c in dataset.cases if c.label]
    if len(cases) < 10:
        raise DatasetError(
            f"learned registration needs >= 10 cases with label maps, found {len(cases)}", path=dataset.root
        )
    split = split_cases(dataset, seed=seed)
    train_ids = split["train"][:max_train_cases]
    shapes = {c: dataset.read_image(c).spatial_shape for c in train_ids}
    volumes = sorted(train_ids, key=lambda c: (int(np.prod(shapes[c])), c))
    template_id = volumes[len(volumes) // 2]
    template = dataset.read_image(template_id)
    if template.spatial_dims != 3:
        raise DatasetError("learned registration is trained on 3D volumes", path=dataset.root)
    grid = _template_grid(template)
    labels = (
        sorted(int(v) for v in dataset.spec.labels if int(v) != 0) if isinstance(dataset.spec.labels, dict) else [1]
    )
    plan = RegistrationPlan(
        grid_shape=list(grid.spatial_shape),
        template_case=template_id,
        labels=labels,
        network_params=network_params
        or {"channels": [16, 32, 32, 32, 32, 32], "final_channels": [16, 16], "integration_steps": 7},
        dice_weight=dice_weight,
        max_epochs=max_epochs,
        steps_per_epoch=steps_per_epoch,
        time_budget_s=time_budget_s,
        seed=seed,
    )
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.json")
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")

    prepared = {c: to_template(dataset, c, template, grid) for c in [*train_ids, *split["val"]]}
    prep_seconds = time.perf_counter() - start
    stack = lambda ids, k: np.stack([prepared[c][k] for c in ids])  # noqa: E731
    train_img, train_lab = stack(train_ids, 0), stack(train_ids, 1)
    val_img, val_lab = stack(split["val"], 0), stack(split["val"], 1)
    n_classes = max(labels) + 1

    net = build_network(plan.network, spatial_dims=3, **plan.network_params)
    warp, warp_nearest = Warp(mode="bilinear", padding_mode="border"), Warp(mode="nearest", padding_mode="border")
    similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7)
    smooth, dice = BendingEnergyLoss(), DiceLoss(include_background=False)

    def onehot(lab: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(lab[:, 0], n_classes).movedim(-1, 1).float()

    def train_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        moving, fixed, moving_lab, fixed_lab = batch
        warped, ddf = model(moving, fixed)
        loss = similarity(warped.float(), fixed) + plan.smoothness_weight * smooth(ddf.float())
        if plan.dice_weight > 0:
            loss = loss + plan.dice_weight * dice(warp(onehot(moving_lab), ddf.float()), onehot(fixed_lab))
        return loss

    n_val = len(val_img)
    val_pairs = [(i, (i + 1) % n_val) for i in range(n_val)]

    def validate(model: torch.nn.Module) -> dict[str, float]:
        scores = []
        for i, j in val_pairs:
            _, ddf = model(torch.from_numpy(val_img[i : i + 1]), torch.from_numpy(val_img[j : j + 1]))
            warped = warp_nearest(torch.from_numpy(val_lab[i : i + 1]).float(), ddf.float())[0, 0].round().long()
            target = torch.from_numpy(val_lab[j, 0])
            for label in labels:
                a, b = warped == label, target == label
                denom = int(a.sum() + b.sum())
                if denom:
                    scores.append(2 * int((a & b).sum()) / denom)
        return {"val_dice": float(np.mean(scores))}

    trainer = Trainer(
        net,
        torch.optim.Adam(net.parameters(), lr=plan.learning_rate),
        train_step,
        _pairs(train_img, train_lab, plan.batch_size, seed),
        out_dir=out / "fold_0",
        steps_per_epoch=plan.steps_per_epoch,
        max_epochs=plan.max_epochs,
        time_budget_s=plan.time_budget_s,
        validate=validate,
        monitor="val_dice",
        mode="max",
        precision=plan.precision,
        extra_state={"plan": plan.model_dump()},
    )
    state = trainer.fit()
    summary = {
        "epochs": state.epoch,
        "steps": state.step,
        "seconds": time.perf_counter() - start,
        "prepare_seconds": prep_seconds,
        "best_val_dice": state.best_metric,
        "best_epoch": state.best_epoch,
        "n_train": len(train_ids),
        "n_val": len(split["val"]),
        "n_test": len(split["test"]),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_model_card(dataset, plan, summary), encoding="utf-8")
    return summary


def _model_card(dataset: Dataset, plan: RegistrationPlan, summary: dict[str, Any]) -> str:
    return f"""# Learned deformable registration ({plan.network})

- Data: dataset `{dataset.name}` ({dataset.root}), {summary["n_train"]} training cases, {summary["n_val"]}
  validation cases, {summary["n_test"]} held-out test cases (`split.json`);
  licence: {dataset.spec.license or "see dataset"}.
- Method: affine (SimpleITK, {plan.affine_metric}) to the fixed image, then a diffeomorphic VoxelMorph network
  (MONAI) predicting the remaining displacement in one forward pass; trained on random pairs of training cases
  affinely aligned to template case `{plan.template_case}`, loss = local NCC + {plan.smoothness_weight} x bending
  energy + {plan.dice_weight} x soft Dice of labels {plan.labels}.
- Training: {summary["epochs"]} epochs ({summary["steps"]} steps) in {summary["seconds"]:.0f} s on a CPU.
- Validation: mean label Dice of warped validation pairs {summary["best_val_dice"]:.4f}
  (best epoch {summary["best_epoch"]}).
- Intended use: inter-subject alignment of images like the training data (same modality, field of view and
  resolution). Limits: not validated on other anatomy or modalities; a pair unlike the training data can
  diverge (detected and reported, not written).
"""
