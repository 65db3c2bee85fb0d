"""Patient-grouped, stratified k-fold and test splits.

All cases of a patient land on one side. Patients are stratified by a per-patient key (the class for
classification, the set of present classes for multi-label, detection and segmentation), so each side keeps
the class ratios of the whole. The assignment is a deterministic greedy fill: patients of each stratum, in a
seeded random order (larger patients first), go to the side furthest below its target share of that stratum.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from deepmia._validate import check_range
from deepmia.data.dataset import Dataset, Splits
from deepmia.errors import DatasetError, InvalidArgumentError

__all__ = ["assign_groups", "make_splits", "strata_of"]

RARE = "(rare)"


def assign_groups(
    groups: Sequence[str],
    strata: Sequence[str] | None,
    fractions: Sequence[float],
    *,
    seed: int = 0,
) -> list[int]:
    """Assign each item to a side, keeping groups together and strata balanced.

    Args:
        groups: Group (patient) of each item.
        strata: Stratum of each item (the stratum of a group is its items' most common one), or None.
        fractions: Target share of each side; they are normalised to sum to 1.
        seed: Seed of the shuffle; the same inputs and seed give the same assignment.

    Returns:
        The side index of each item.
    """
    if not fractions or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InvalidArgumentError(f"fractions must be non-negative with a positive sum, got {list(fractions)}")
    target = np.asarray(fractions, dtype=float) / float(sum(fractions))
    size: Counter[str] = Counter(groups)
    group_stratum: dict[str, str] = {}
    if strata is None:
        group_stratum = {g: "" for g in size}
    else:
        votes: dict[str, Counter[str]] = defaultdict(Counter)
        for g, s in zip(groups, strata, strict=True):
            votes[g][s] += 1
        group_stratum = {g: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, v in votes.items()}
    # Strata with fewer groups than sides cannot be spread; pool them.
    members: dict[str, list[str]] = defaultdict(list)
    for g in sorted(size):
        members[group_stratum[g]].append(g)
    nonzero = int(np.count_nonzero(target))
    pooled: dict[str, list[str]] = defaultdict(list)
    for s, gs in members.items():
        pooled[s if len(gs) >= nonzero else RARE].extend(gs)

    rng = np.random.default_rng(seed)
    total = float(len(groups))
    side_total = np.zeros(len(target))
    side_of: dict[str, int] = {}
    for s in sorted(pooled):
        gs = pooled[s]
        order = rng.permutation(len(gs))
        ordered = sorted((gs[i] for i in order), key=lambda g: -size[g])  # stable: big groups first
        stratum_total = float(sum(size[g] for g in gs))
        side_stratum = np.zeros(len(target))
        for g in ordered:
            deficit = target * stratum_total - side_stratum
            overall = target * total - side_total
            # furthest below target in this stratum, then overall, then lowest index; never a zero-share side
            key = [(-deficit[b], -overall[b], b) for b in range(len(target)) if target[b] > 0]
            b = min(key)[2]
            side_of[g] = b
            side_stratum[b] += size[g]
            side_total[b] += size[g]
    return [side_of[g] for g in groups]


def strata_of(dataset: Dataset, *, label_presence: Mapping[str, Sequence[int]] | None = None) -> list[str] | None:
    """A stratification key per case, or None when the task has nothing to stratify by.

    Classification: the class (multi-label: the sorted positive classes). Detection: the set of box classes.
    Segmentation: the set of foreground label values present, taken from ``label_presence`` (case id ->
    values), which :func:`deepmia.data.stats.label_presence` computes by reading the label maps.
    """
    task = dataset.task
    if task == "classification":
        return ["+".join(map(str, sorted(c.classes))) for c in dataset.cases]
    if task == "detection":
        return ["+".join(sorted({b.label for b in c.boxes or []})) or "(none)" for c in dataset.cases]
    if task == "segmentation" and label_presence is not None:
        return ["+".join(str(v) for v in sorted(label_presence[c.id]) if v != 0) or "(none)" for c in dataset.cases]
    return None


def make_splits(
    dataset: Dataset,
    *,
    folds: int = 5,
    test_fraction: float = 0.2,
    seed: int = 0,
    strata: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Splits:
    """Patient-grouped k-fold cross-validation plus a held-out test set.

    Args:
        dataset: The dataset to split.
        folds: Number of cross-validation folds (>= 2); each patient not in test is validated in exactly one.
        test_fraction: Share of cases held out for test (0 for none).
        seed: Seed; the same dataset and seed give the same splits.
        strata: Stratum of each case; by default :func:`strata_of` (for segmentation the label maps are read).
        progress: Called as ``progress(done, total)`` while label maps are read.

    Returns:
        The splits (not yet stored: pass them to :meth:`Dataset.set_splits`).

    Raises:
        InvalidArgumentError: ``folds`` < 2, ``test_fraction`` outside [0, 1), or too few patients.
    """
    if folds < 2:
        raise InvalidArgumentError(f"folds={folds} must be at least 2")
    check_range("test_fraction", test_fraction, low=0.0, high=0.95)
    n_patients = len(dataset.patients)
    needed = folds + (1 if test_fraction > 0 else 0)
    if n_patients < needed:
        raise InvalidArgumentError(
            f"{n_patients} patient(s) cannot be split into {folds} folds"
            + (" and a test set" if test_fraction > 0 else "")
        )
    if not len(dataset):
        raise DatasetError("dataset has no cases", path=dataset.root)
    if strata is None:
        presence = None
        if dataset.task == "segmentation":
            from deepmia.data.stats import label_presence

            presence = label_presence(dataset, progress=progress)
        strata = strata_of(dataset, label_presence=presence)
    ids = [c.id for c in dataset.cases]
    groups = [c.patient_id for c in dataset.cases]
    fractions = [test_fraction] + [(1.0 - test_fraction) / folds] * folds
    sides = assign_groups(groups, strata, fractions, seed=seed)
    test = [i for i, s in zip(ids, sides, strict=True) if s == 0]
    parts = [[i for i, s in zip(ids, sides, strict=True) if s == k + 1] for k in range(folds)]
    fold_list = [
        {"train": [i for j, p in enumerate(parts) if j != k for i in p], "val": parts[k]} for k in range(folds)
    ]
    return Splits.model_validate(
        {
            "folds": fold_list,
            "test": test,
            "meta": {
                "method": "patient-grouped stratified greedy" if strata is not None else "patient-grouped greedy",
                "folds": folds,
                "test_fraction": test_fraction,
                "seed": seed,
            },
        }
    )
