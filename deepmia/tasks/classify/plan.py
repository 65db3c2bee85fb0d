"""The classification plan: every choice of a run, derived from the dataset fingerprint and a wall-clock budget.

Rules (no dataset-specific code):

* **Input size**: the median image shape, capped at 224 px (2D) or 64 voxels per axis (3D) on a CPU; images
  under 64 px per axis keep their size and the network gets a stride-1 stem (``small_input``).
* **Channels**: one network input per array channel of a case's files, so an RGB photograph or ultrasound
  screenshot trains as three channels (``image[0]``, ``image[1]``, ``image[2]``) with no option.
* **Network**: a MONAI ResNet-18 (2D and 3D) whose stage widths are the widest of a short ladder whose
  measured training speed still fits ``min_epochs`` epochs of every ensemble member into the budget (the
  measurement happens at training time, :func:`fit_to_budget`).
* **Augmentation**: small random rotation (10 degrees), scaling (10%) and translation (8%) on every sample,
  intensity scale and shift; mirroring along the left-right axis for 2D images and along every axis for
  volumes (as nnU-Net mirrors), with the same mirrors as test-time augmentation.
* **Imbalance**: when the largest class outnumbers the smallest by more than 1.5x, the cross-entropy is
  weighted by inverse square-root class frequency (multi-label: ``pos_weight`` per label).
* **Positive class**: the class a positive finding means (``--positive-class``, else ``dataset.json``'s
  ``positive_class``, else the rule of :func:`positive_class_of`); a binary model's operating threshold (Youden on
  validation) applies to its probability.
* **Optimiser**: AdamW (lr 2e-3, weight decay 0.05, batch 64 in 2D / 16 in 3D), a poly schedule over the
  budget (the engine's Trainer), model selection on validation AUROC.
* **Ensemble**: up to three members (seeds; or folds where the dataset has several) when each still gets
  ``min_epochs`` epochs; their logits are averaged.

Any field can be overridden (``key=value``, values parsed as JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.tasks._plan import StrictModel, apply_overrides, load_plan_file

__all__ = ["Normalization", "Augmentation", "Schedule", "TabularSpec", "ClassifyPlan", "make_plan", "load_plan",
           "apply_overrides", "positive_class_of", "SMALL_INPUT", "MAX_SIZE", "NEGATIVE_WORDS"]

PLAN_VERSION = 1
SMALL_INPUT = 64  #: images with every axis under this many pixels get a stride-1 stem
MAX_SIZE = {2: 224, 3: 64}  #: largest network input per axis on a CPU


class Normalization(StrictModel):
    """Per-channel intensity normalisation: clip to ``clip`` (if set), then ``(x - mean) / std`` (dataset-wide)."""

    mean: list[float]
    std: list[float]
    clip: list[tuple[float, float]] | None = None


class Augmentation(StrictModel):
    """Random augmentation applied to every training sample (ranges are +-)."""

    rotate_deg: float = Field(10.0, ge=0, le=180)
    scale: float = Field(0.1, ge=0, lt=1)
    translate: float = Field(0.08, ge=0, lt=1)
    intensity_scale: float = Field(0.2, ge=0, lt=1)
    intensity_shift: float = Field(0.2, ge=0)
    mirror_axes: list[int] = Field(default_factory=list)


class Schedule(StrictModel):
    """Optimiser, batch and budget."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    batch_size: int = Field(64, ge=1)
    max_epochs: int = Field(100, ge=1)
    min_epochs: int = Field(30, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16"] = "bf16"
    threads: int | None = Field(None, ge=1)  #: torch threads; measured (a loaded machine may train faster on fewer)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class TabularSpec(StrictModel):
    """Clinical table columns the model uses and how each is encoded (fitted on the training cases).

    Numeric columns are standardised with the training mean/std, a missing value becomes 0 plus a 1 in the
    column's missing-indicator feature; categorical columns are one-hot over the training categories plus one
    slot for a missing or unseen value.
    """

    id_column: str = "case_id"
    numeric: dict[str, tuple[float, float]] = Field(default_factory=dict)  #: column -> (mean, std)
    categorical: dict[str, list[str]] = Field(default_factory=dict)  #: column -> categories

    @property
    def width(self) -> int:
        """Number of encoded features."""
        return 2 * len(self.numeric) + sum(len(c) + 1 for c in self.categorical.values())

    @property
    def columns(self) -> list[str]:
        """Every column the model reads, numeric first."""
        return [*self.numeric, *self.categorical]


class ClassifyPlan(StrictModel):
    """A complete, validated classification run configuration (``plan.json``)."""

    task: Literal["classification"] = "classification"
    version: int = PLAN_VERSION
    dataset: str
    class_names: list[str] = Field(min_length=1)
    multi_label: bool = False
    channels: list[str]
    spatial_dims: Literal[2, 3]
    input_size: list[int]
    normalization: Normalization
    network: str = "resnet"
    network_params: dict[str, Any] = Field(default_factory=dict)
    dropout: float = Field(0.2, ge=0, lt=1)
    augmentation: Augmentation = Field(default_factory=Augmentation)
    class_weights: list[float] | None = None
    schedule: Schedule = Field(default_factory=Schedule)
    members: int = Field(1, ge=1, le=10)
    seed: int = 0
    tta: bool = True
    mc_dropout_samples: int = Field(0, ge=0)
    tabular: TabularSpec | None = None
    fusion_mode: Literal["late", "film"] = "late"
    fusion_hidden: int = Field(64, ge=1)
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    measurements: dict[str, Any] = Field(default_factory=dict)  #: speed measured when fitting the budget
    #: The class a positive finding means (the disease); a binary model's operating threshold is on its probability.
    positive_class: str | None = None

    @model_validator(mode="after")
    def _check_positive(self) -> ClassifyPlan:
        if self.positive_class is not None and self.positive_class not in self.class_names:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of the classes {self.class_names}")
        return self

    @property
    def num_outputs(self) -> int:
        """Logits the network produces."""
        return len(self.class_names)

    @property
    def positive_index(self) -> int | None:
        """Index of the positive class; a plan without one (older models) reads class 1 of a binary model."""
        if self.positive_class is not None:
            return self.class_names.index(self.positive_class)
        return 1 if self.num_outputs == 2 and not self.multi_label else None


#: Words that mark a class as a negative finding (whole words of the lower-cased class name).
NEGATIVE_WORDS = frozenset({"normal", "benign", "healthy", "negative", "control", "absent", "no", "none", "nofinding"})


def positive_class_of(class_names: list[str], *, declared: str | None = None, multi_label: bool = False) -> str | None:
    """The positive (disease) class: ``declared`` (the user's or ``dataset.json``'s), else the documented rule.

    Rule: when exactly one class name holds none of :data:`NEGATIVE_WORDS` and another holds one, that class is
    positive (``malignant`` against ``normal, benign`` or against ``benign`` and ``normal``; ``pneumonia`` against
    ``normal``); otherwise class 1 of a binary model; otherwise (multi-class) none, and decisions are the argmax.
    Multi-label models have no single positive class.

    Raises:
        InvalidArgumentError: ``declared`` is not one of the classes (the message lists them).
    """
    import re

    if declared is not None:
        if declared not in class_names:
            import difflib

            near = difflib.get_close_matches(declared, class_names, n=1)
            raise InvalidArgumentError(
                f"positive class {declared!r} is not one of the classes {class_names}",
                fix=f"did you mean {near[0]!r}?" if near else "name one of the classes")
        return declared
    if multi_label:
        return None
    negative = [bool(NEGATIVE_WORDS & set(re.findall(r"[a-z]+", n.lower()))) for n in class_names]
    others = [n for n, neg in zip(class_names, negative, strict=True) if not neg]
    if len(others) == 1 and any(negative):
        return others[0]
    return class_names[1] if len(class_names) == 2 else None


def load_plan(path: str | Path) -> ClassifyPlan:
    """Read and validate a plan file.

    Raises:
        InvalidArgumentError: Missing, not JSON or not a valid plan (each bad field named).
    """
    return load_plan_file(ClassifyPlan, path)


def _class_weights(counts: list[int]) -> list[float] | None:
    """Inverse square-root frequency weights (mean 1) when the classes are imbalanced by more than 1.5x."""
    if min(counts) <= 0 or max(counts) / min(counts) <= 1.5:
        return None
    raw = [(1.0 / c) ** 0.5 for c in counts]
    mean = sum(raw) / len(raw)
    return [round(r / mean, 4) for r in raw]


def make_plan(
    fingerprint: dict[str, Any], *, multi_label: bool = False, time_budget_s: float | None = None,
    num_folds: int = 1, channel_counts: list[int] | None = None, positive_class: str | None = None,
) -> ClassifyPlan:
    """Derive a plan from a classification dataset's fingerprint (:func:`deepmia.data.stats.fingerprint`).

    The network width and the number of ensemble members are provisional here; :func:`fit_to_budget` in
    :mod:`deepmia.tasks.classify.train` settles them from a speed measurement on this machine.

    Args:
        fingerprint: The dataset fingerprint.
        multi_label: Cases may hold several classes.
        time_budget_s: Wall-clock training budget in seconds (all members together).
        num_folds: Folds the dataset's splits define (members are folds when there are several).
        channel_counts: Array channels of each dataset channel's file (3 for an RGB photograph); the network
            takes one input per array channel, named ``NAME[i]`` and normalised with its file's statistics.
            Default: one per dataset channel.
        positive_class: The positive (disease) class; default by the rule of :func:`positive_class_of`.

    Raises:
        DatasetError: The dataset is not a classification dataset, mixes 2D and 3D images, or lacks classes.
    """
    if fingerprint.get("task") != "classification":
        raise DatasetError(f"dataset {fingerprint.get('name')!r} is a {fingerprint.get('task')} dataset",
                           fix="train classify needs a classification dataset")
    dims = fingerprint["spatial_dims"]
    if dims not in (2, 3):
        raise DatasetError(f"dataset {fingerprint['name']!r} mixes image dimensionalities {dims}",
                           fix="split it into a 2D and a 3D dataset")
    counts = list(fingerprint["labels"].values())
    names = list(fingerprint["labels"])
    if len(names) < 2 and not multi_label:
        raise DatasetError(f"dataset {fingerprint['name']!r} has {len(names)} class(es); a classifier needs two")
    shape = [round(axis["median"]) for axis in fingerprint["shape"]]
    size = [min(s, MAX_SIZE[dims]) for s in shape]
    small = max(size) < SMALL_INPUT
    channels = fingerprint["channels"]
    counts_per_file = channel_counts or [1] * len(channels)
    if len(counts_per_file) != len(channels):
        raise DatasetError(f"{len(counts_per_file)} channel count(s) for {len(channels)} dataset channel(s)")
    names_in, means, stds, clips = [], [], [], []
    ct = any(ch["modality"] == "CT" for ch in channels)
    for ch, n in zip(channels, counts_per_file, strict=True):
        it = ch["intensity"]  # a multi-channel file's statistics pool its colours
        names_in += [ch["name"]] if n == 1 else [f"{ch['name']}[{i}]" for i in range(n)]
        means += [it["mean"]] * n
        stds += [max(it["std"], 1e-6)] * n
        clips += [(it["percentile_00_5"], it["percentile_99_5"])] * n
    normalization = Normalization(mean=means, std=stds, clip=clips if ct else None)
    mirror = [0] if dims == 2 else [0, 1, 2]
    weights = None if multi_label else _class_weights(counts)
    schedule = Schedule(
        batch_size=64 if dims == 2 else 16, time_budget_s=time_budget_s, max_epochs=100 if dims == 2 else 60,
    )
    return ClassifyPlan(
        dataset=fingerprint["name"],
        class_names=names,
        multi_label=multi_label,
        channels=names_in,
        spatial_dims=dims,
        input_size=size,
        normalization=normalization,
        network="resnet",
        network_params={"depth": 18, "widths": [64, 128, 256, 512], "small_input": small},
        augmentation=Augmentation(rotate_deg=10.0, mirror_axes=mirror),
        class_weights=weights,
        schedule=schedule,
        members=max(1, min(num_folds, 5)),
        fingerprint={k: fingerprint[k] for k in ("num_cases", "shape", "spacing", "labels") if k in fingerprint},
        positive_class=positive_class_of(names, declared=positive_class, multi_label=multi_label),
    )
