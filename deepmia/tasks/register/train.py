"""Training a learned registration model (``deepmia train register``) with the shared engine's Trainer.

See :mod:`deepmia.tasks.register.plan` for the rules. Cases are split by patient into train / val / test
(80/10/10, seeded; ``split.json``); test cases are never seen in training, so benchmarks draw pairs from them.
Each case is read once, normalised and zero-padded onto the training grid; every step draws random pairs,
matches their centres of mass as inference does, moves the moving image by a random affine and resamples it
(image and one-hot labels together) in one ``grid_sample``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError
from deepmia.image import Image
from deepmia.metrics.segmentation import dice_per_label
from deepmia.tasks._plan import apply_overrides
from deepmia.tasks.register.classical import rescale_intensities
from deepmia.tasks.register.learned import (
    LearnedRegistration,
    centre_of_mass,
    folding_fraction,
    map_points,
    moments_map,
    pad_end,
    padded_shape,
    sample,
    voxel_grid,
)
from deepmia.tasks.register.plan import RegistrationPlan, load_plan

__all__ = ["train_registration", "plan_registration", "split_cases", "random_affine", "DEFAULT_NETWORK"]

#: Network parameters of ``affine_voxelmorph`` unless the caller gives others.
DEFAULT_NETWORK: dict[str, Any] = {
    "channels": [16, 32, 32, 32, 32, 32],
    "final_channels": [16, 16],
    "affine_channels": [8, 16, 32, 32],
    "integration_steps": 5,
}


def split_cases(dataset: Dataset, *, seed: int) -> dict[str, list[str]]:
    """Train / val / test case ids (80/10/10 of the patients, seeded)."""
    patients = sorted(dataset.patients)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    n = len(patients)
    n_val = n_test = max(1, n // 10)
    sides = {"test": patients[:n_test], "val": patients[n_test : n_test + n_val], "train": patients[n_test + n_val :]}
    return {side: sorted(c for p in ps for c in dataset.patients[p]) for side, ps in sides.items()}


def random_affine(
    rng: np.random.Generator, centre: np.ndarray, *, rotation_deg: float, scale: float, shift: float
) -> np.ndarray:
    """A random homogeneous 3D voxel map about ``centre``: rotations about each axis, per-axis scales, a shift."""
    out = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, 3))):
        a, b = [k for k in range(3) if k != axis]
        rot = np.eye(3)
        rot[a, a] = rot[b, b] = np.cos(angle)
        rot[a, b], rot[b, a] = -np.sin(angle), np.sin(angle)
        out = rot @ out
    out = out @ np.diag(rng.uniform(1 - scale, 1 + scale, 3))
    m = np.eye(4)
    m[:3, :3] = out
    m[:3, 3] = centre + rng.uniform(-shift, shift, 3) - out @ centre
    return m


class _Cases:
    """Training arrays: normalised images and labels zero-padded onto one grid, affines, centres, true shapes."""

    def __init__(self, cases: list[tuple[Image, Image]], grid: tuple[int, ...]) -> None:
        import torch

        images, labels, affines, centres, self.shapes = [], [], [], [], []
        for image, label in cases:
            normalised = rescale_intensities(image)
            images.append(pad_end(torch.from_numpy(normalised.array)[None], grid)[0])
            labels.append(pad_end(torch.from_numpy(label.array.astype(np.int64))[None], grid)[0])
            affines.append(image.affine)
            centres.append(centre_of_mass(normalised))
            self.shapes.append(image.spatial_shape)
        self.images, self.labels = torch.stack(images), torch.stack(labels)
        self.affines, self.centres = np.stack(affines), np.stack(centres)

    def __len__(self) -> int:
        return len(self.images)

    def initial(self, i: int, j: int) -> np.ndarray:
        """The moments map from case ``i`` (fixed) to case ``j`` (moving), as at inference."""
        return moments_map(self.affines[i], self.centres[i], self.affines[j], self.centres[j])


def _onehot(labels: Any, n_classes: int) -> Any:
    import torch

    return torch.nn.functional.one_hot(labels[:, 0], n_classes).movedim(-1, 1).float()


def _pairs(cases: _Cases, plan: RegistrationPlan, n_classes: int, seed: int) -> Iterator[tuple[Any, ...]]:
    """Random pairs forever: (moving, fixed, moving one-hot labels, fixed one-hot labels) on the grid."""
    import torch

    rng = np.random.default_rng(seed)
    grid = voxel_grid(tuple(plan.grid_shape))[None]
    n, batch = len(cases), plan.batch_size
    while True:
        i = rng.integers(0, n, batch)
        j = (i + rng.integers(1, n, batch)) % n  # never a case with itself
        maps = [
            cases.initial(a, b)
            @ random_affine(
                rng,
                (np.array(cases.shapes[a]) - 1) / 2.0,
                rotation_deg=plan.augment_rotation_deg,
                scale=plan.augment_scale,
                shift=plan.augment_shift,
            )
            for a, b in zip(i, j, strict=True)
        ]
        pos = map_points(torch.tensor(np.stack(maps), dtype=torch.float32), grid)
        moving = sample(torch.cat([cases.images[j], _onehot(cases.labels[j], n_classes)], 1), pos)
        yield moving[:, :1], cases.images[i], moving[:, 1:], _onehot(cases.labels[i], n_classes)


def _check_enough_cases(dataset: Dataset) -> None:
    """Refuse a dataset with fewer than 20 cases that have label maps (2 validation pairs)."""
    cases = [c for c in dataset.cases if c.label]
    if len(cases) < 20:
        raise DatasetError(
            f"learned registration needs >= 20 cases with label maps (2 validation pairs), found {len(cases)}",
            path=dataset.root,
        )


def plan_registration(
    dataset: Dataset,
    *,
    time_budget_s: float | None = 600.0,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    max_train_cases: int = 1000,
    seed: int = 0,
    shapes: Sequence[Sequence[int]] | None = None,
) -> RegistrationPlan:
    """The plan of a learned-registration run on ``dataset`` (``deepmia train register``'s, before precisions).

    The training grid is the largest training or validation case of the seeded patient split, padded to the
    plan's ``multiple``; the Dice labels are the dataset's foreground labels; the network is
    :data:`DEFAULT_NETWORK`. Training and inference precisions are measured when training starts.

    Args:
        dataset: A dataset with label maps.
        time_budget_s: Training wall-clock budget in seconds (None: no budget).
        overrides: Plan fields to set, ``["batch_size=2", "dice_weight=0"]`` or a mapping (validated again).
        max_train_cases: Use at most this many training cases.
        seed: Split, sampling and initialisation seed.
        shapes: Spatial shapes of the training and validation cases when the caller has read them already;
            otherwise those images are read.

    Raises:
        DatasetError: The dataset has fewer than 20 cases with label maps, or images that are not 3D.
        InvalidArgumentError: An override names an unknown field or gives an invalid value.
    """
    _check_enough_cases(dataset)
    if shapes is None:
        split = split_cases(dataset, seed=seed)
        ids = [*split["train"][:max_train_cases], *split["val"]]
        shapes = [dataset.read_image(case_id).spatial_shape for case_id in ids]
    if any(len(s) != 3 for s in shapes):
        raise DatasetError("learned registration is trained on 3D volumes", path=dataset.root)
    multiple = RegistrationPlan.model_fields["multiple"].default
    grid = padded_shape(tuple(int(n) for n in np.max(shapes, axis=0)), multiple)
    labels = (
        sorted(int(v) for v in dataset.spec.labels if int(v) != 0) if isinstance(dataset.spec.labels, dict) else [1]
    )
    plan = RegistrationPlan(
        network_params=DEFAULT_NETWORK,
        multiple=multiple,
        grid_shape=list(grid),
        labels=labels,
        time_budget_s=time_budget_s,
        seed=seed,
    )
    return apply_overrides(plan, overrides) if overrides else plan


def _read_cases(dataset: Dataset, case_ids: list[str]) -> dict[str, tuple[Image, Image]]:
    """Image and label map of each case, read once (its shape sizes the grid, then it is padded onto it)."""
    read = {}
    for case_id in case_ids:
        image = dataset.read_image(case_id)
        read[case_id] = (image, dataset.read_label(case_id, image=image))
    return read


# ------------------------------------------------------------------ training
def _train_step(plan: RegistrationPlan) -> Callable[[Any, tuple[Any, ...]], Any]:
    """The loss of one batch: local NCC plus weighted bending energy and (optionally) soft label Dice."""
    import torch
    from monai.losses import BendingEnergyLoss, DiceLoss, LocalNormalizedCrossCorrelationLoss
    from monai.networks.blocks import Warp

    from deepmia._warnings import library_warnings_ignored

    with library_warnings_ignored():  # MONAI's Warp announces torch's grid_sample
        warp = Warp(mode="bilinear", padding_mode="border")
    lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=plan.lncc_kernel)
    smooth, dice = BendingEnergyLoss(), DiceLoss(include_background=False)

    def train_step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        moving, fixed, moving_lab, fixed_lab = batch
        warped, ddf = model(moving, fixed)
        with torch.autocast(fixed.device.type, enabled=False):  # losses in float32 (LNCC cancels badly in bf16)
            with library_warnings_ignored():  # MONAI's bending energy indexes with lists (see deepmia._warnings)
                bending = smooth(ddf)
            loss = lncc(warped, fixed) + plan.smoothness_weight * bending
            if plan.dice_weight > 0:
                loss = loss + plan.dice_weight * dice(warp(moving_lab, ddf), fixed_lab)
        return loss

    return train_step


def _validator(
    model: LearnedRegistration, val: _Cases, labels: list[int]
) -> Callable[[Any, str | None], dict[str, float]]:
    """Validation on the pairs (i, i+1) of the validation cases: mean label Dice and worst folding fraction."""
    n_val = len(val)
    val_pairs = [(i, (i + 1) % n_val) for i in range(n_val)]

    def validate(network: Any, precision: str | None = None) -> dict[str, float]:
        scores, folding = [], []
        for i, j in val_pairs:
            pos = model.positions(val.images[i : i + 1], val.images[j : j + 1], val.initial(i, j), precision=precision)
            crop = (slice(None), slice(None), *[slice(0, n) for n in val.shapes[i]])
            pos = pos[crop]
            warped = sample(val.labels[j : j + 1], pos, mode="nearest")[0, 0].round().long()
            dice = dice_per_label(warped.numpy(), val.labels[i, 0][crop[2:]].numpy(), labels)
            scores += [v for v in dice.values() if not np.isnan(v)]
            folding.append(folding_fraction(pos))
        return {"val_dice": float(np.mean(scores)), "val_folding": float(np.max(folding))}

    return validate


def _measure_precisions(
    net: Any, model: LearnedRegistration, train: _Cases, train_step: Callable[..., Any], batch: tuple[Any, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time a training step, then a forward pass, in bf16 and fp32; each result names the faster precision."""
    from deepmia.engine.runtime import autocast, choose_precision

    def step(p: str) -> None:
        with autocast(p):
            loss = train_step(net, batch)
        loss.backward()
        net.zero_grad(set_to_none=True)

    measured_train = choose_precision(step, repeats=2)
    net.eval()
    measured_infer = choose_precision(
        lambda p: model.positions(train.images[:1], train.images[1:2], train.initial(0, 1), precision=p)
    )
    return measured_train, measured_infer


def _set_precisions(
    plan: RegistrationPlan, out: Path, precision: str | None, measure: Callable[[], tuple[dict, dict]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set the plan's training and inference precisions: the given one, the resumed run's, or ``measure()``'s."""
    previous = out / "plan.json"
    if precision is None and (out / "fold_0" / "checkpoint_last.pt").is_file() and previous.is_file():
        precision_of = load_plan(out)  # a resumed run keeps the precisions it measured
        plan.precision, plan.inference_precision = precision_of.precision, precision_of.inference_precision
        measured_train = {"precision": plan.precision, "resumed": True}
        measured_infer = {"precision": plan.inference_precision, "resumed": True}
    elif precision is None:
        measured_train, measured_infer = measure()
        plan.precision, plan.inference_precision = measured_train["precision"], measured_infer["precision"]
    else:
        measured_train = measured_infer = {"precision": precision}
        plan.precision = plan.inference_precision = precision  # type: ignore[assignment]
    return measured_train, measured_infer


def _fit(
    net: Any,
    plan: RegistrationPlan,
    train_step: Callable[..., Any],
    pairs: Iterator[tuple[Any, ...]],
    out_dir: Path,
    validate: Callable[[Any, str | None], dict[str, float]],
) -> Any:
    """Train with the shared engine's Trainer into ``out_dir`` (resuming from its last checkpoint); its state."""
    import torch

    from deepmia.engine.trainer import Trainer

    trainer = Trainer(
        net,
        torch.optim.Adam(net.parameters(), lr=plan.learning_rate),
        train_step,
        pairs,
        out_dir=out_dir,
        steps_per_epoch=plan.steps_per_epoch,
        max_epochs=plan.max_epochs,
        time_budget_s=plan.time_budget_s,
        validate=lambda network: validate(network, plan.inference_precision),
        monitor="val_dice",
        mode="max",
        precision=plan.precision,
        extra_state={"plan": plan.model_dump()},
    )
    return trainer.fit()


def _write_metrics(out: Path, state: Any, split: dict[str, list[str]], n_train: int, **timing: Any) -> dict[str, Any]:
    """The run summary (``timing``: ``start``, ``prepare_seconds``, ``precision``), also written to metrics.json."""
    best = next((r for r in state.history if r["epoch"] == state.best_epoch), {})
    summary = {
        "epochs": state.epoch,
        "steps": state.step,
        "seconds": time.perf_counter() - timing["start"],
        "train_seconds": state.elapsed_s,
        "prepare_seconds": timing["prepare_seconds"],
        "best_val_dice": state.best_metric,
        "best_val_folding": best.get("val_folding"),
        "best_epoch": state.best_epoch,
        "precision": timing["precision"],
        "n_train": n_train,
        "n_val": len(split["val"]),
        "n_test": len(split["test"]),
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def train_registration(
    dataset_dir: str | PathLike[str],
    model_dir: str | PathLike[str],
    *,
    time_budget_s: float = 600.0,
    max_epochs: int = 1000,
    dice_weight: float = 1.0,
    smoothness_weight: float = 1.0,
    max_train_cases: int = 1000,
    steps_per_epoch: int = 50,
    batch_size: int = 4,
    network_params: dict[str, Any] | None = None,
    precision: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Prepare the data, train ``affine_voxelmorph``, write the model folder; returns the run summary.

    Model folder: ``plan.json``, ``fold_0/`` (the Trainer's checkpoint, best weights and logs), ``split.json``,
    and ``metrics.json`` (``deepmia train register`` then writes the card, ``README.md``). A second call with the
    same folder resumes from the last checkpoint.

    Args:
        dataset_dir: Dataset folder with label maps.
        model_dir: Model folder to write.
        time_budget_s: Training wall-clock budget (data preparation not included).
        max_epochs: Upper bound on epochs.
        dice_weight: Weight of the soft label Dice (0: unsupervised).
        smoothness_weight: Weight of the bending energy.
        max_train_cases: Use at most this many training cases.
        steps_per_epoch: Optimiser steps between validations.
        batch_size: Pairs per step.
        network_params: Parameters of ``affine_voxelmorph`` (default :data:`DEFAULT_NETWORK`).
        precision: ``bf16`` or ``fp32`` for training and inference; None measures both and takes the faster.
        seed: Split, sampling and initialisation seed.

    Raises:
        DatasetError: The dataset has fewer than 20 cases with label maps, or images that are not 3D.
    """
    from deepmia.engine.runtime import configure_threads, seed_everything
    from deepmia.nn import build_network

    start = time.perf_counter()
    configure_threads()
    seed_everything(seed)
    dataset = Dataset.load(dataset_dir)
    _check_enough_cases(dataset)
    split = split_cases(dataset, seed=seed)
    train_ids = split["train"][:max_train_cases]
    read = _read_cases(dataset, [*train_ids, *split["val"]])
    plan = plan_registration(
        dataset, time_budget_s=time_budget_s, max_train_cases=max_train_cases, seed=seed,
        shapes=[image.spatial_shape for image, _ in read.values()],
    )
    plan = RegistrationPlan.model_validate({
        **plan.model_dump(), "network_params": network_params or DEFAULT_NETWORK, "dice_weight": dice_weight,
        "smoothness_weight": smoothness_weight, "batch_size": batch_size, "max_epochs": max_epochs,
        "steps_per_epoch": steps_per_epoch,
    })
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")
    grid = tuple(plan.grid_shape)
    train, val = _Cases([read[c] for c in train_ids], grid), _Cases([read[c] for c in split["val"]], grid)
    del read
    prep_seconds = time.perf_counter() - start
    n_classes = max(plan.labels) + 1

    net = build_network(plan.network, spatial_dims=3, **plan.network_params)
    train_step = _train_step(plan)
    model = LearnedRegistration(plan, net)
    measured_train, measured_infer = _set_precisions(
        plan, out, precision,
        lambda: _measure_precisions(net, model, train, train_step, next(_pairs(train, plan, n_classes, seed + 1))),
    )
    plan.save(out / "plan.json")
    seed_everything(seed)
    state = _fit(
        net, plan, train_step, _pairs(train, plan, n_classes, seed), out / "fold_0", _validator(model, val, plan.labels)
    )
    return _write_metrics(
        out, state, split, len(train_ids), start=start, prepare_seconds=prep_seconds,
        precision={"train": measured_train, "inference": measured_infer},
    )
