"""Patient-grouped, stratified splits: no leakage, balanced strata, deterministic by seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmia.data.dataset import Dataset, check_leakage
from deepmia.data.importers import import_dataset
from deepmia.data.splits import assign_groups, make_splits
from deepmia.errors import InvalidArgumentError, SplitLeakageError


def _cls_dataset(tmp_path, patients: list[int], classes: list[int], n_classes: int = 2) -> Dataset:
    cases = [{"id": f"c{i}", "patient_id": f"p{p}", "images": [f"c{i}.png"], "class": c}
             for i, (p, c) in enumerate(zip(patients, classes, strict=True))]
    return Dataset.create(tmp_path, name="t", task="classification", channels=[{"name": "image"}],
                          labels=[f"k{k}" for k in range(n_classes)], cases=cases)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), min_size=12, max_size=120),
    folds=st.integers(2, 5),
    test_fraction=st.sampled_from([0.0, 0.15, 0.3]),
    seed=st.integers(0, 10),
)
def test_no_patient_on_two_sides(tmp_path_factory, data, folds, test_fraction, seed):
    patients = [p for p, _ in data]
    if len(set(patients)) < folds + 1:
        return
    ds = _cls_dataset(tmp_path_factory.mktemp("s"), patients, [c for _, c in data], n_classes=3)
    splits = make_splits(ds, folds=folds, test_fraction=test_fraction, seed=seed)
    check_leakage(splits, ds.patient_of)  # raises on leakage
    side = {}
    for cid in splits.test:
        side[ds.patient_of[cid]] = "test"
    for k, fold in enumerate(splits.folds):
        assert set(fold.train).isdisjoint(fold.val)
        for cid in fold.val:
            assert side.setdefault(ds.patient_of[cid], k) == k
    all_ids = {c.id for c in ds.cases}
    val_ids = [c for f in splits.folds for c in f.val]
    assert sorted(val_ids + splits.test) == sorted(all_ids)  # each case validated once or tested
    for fold in splits.folds:
        assert set(fold.train) | set(fold.val) == all_ids - set(splits.test)
    if test_fraction == 0:
        assert splits.test == []


def test_stratification_and_determinism(tmp_path):
    rng = np.random.default_rng(3)
    n = 600
    patients = rng.integers(0, 300, n).tolist()
    classes = [int(rng.random() < 0.2) for _ in range(n)]
    # a patient's cases share its class
    first = {}
    classes = [first.setdefault(p, c) for p, c in zip(patients, classes, strict=True)]
    ds = _cls_dataset(tmp_path, patients, classes)
    splits = make_splits(ds, folds=5, test_fraction=0.2, seed=7)
    overall = np.mean(classes)
    for ids in [splits.test] + [f.val for f in splits.folds]:
        frac = np.mean([ds.case(i).class_ for i in ids])
        assert abs(frac - overall) < 0.03
        assert abs(len(ids) - n * (0.2 if ids is splits.test else 0.16)) < 0.05 * n
    assert make_splits(ds, folds=5, test_fraction=0.2, seed=7) == splits
    assert make_splits(ds, folds=5, test_fraction=0.2, seed=8) != splits


def test_assign_groups_keeps_groups_together():
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    sides = assign_groups(groups, None, [0.5, 0.5], seed=0)
    by_group = {}
    for g, s in zip(groups, sides, strict=True):
        assert by_group.setdefault(g, s) == s
    with pytest.raises(InvalidArgumentError):
        assign_groups(groups, None, [-1, 2])


def test_invalid_arguments(tmp_path):
    ds = _cls_dataset(tmp_path, [0, 1, 2], [0, 1, 0])
    with pytest.raises(InvalidArgumentError, match="folds=1"):
        make_splits(ds, folds=1)
    with pytest.raises(InvalidArgumentError, match="3 patient\\(s\\) cannot be split into 5 folds"):
        make_splits(ds, folds=5)


def test_set_splits_refuses_leakage(tmp_path):
    ds = _cls_dataset(tmp_path, [0, 0, 1, 2], [0, 0, 1, 1])
    with pytest.raises(SplitLeakageError, match="patient 'p0'.*fold 0 train, fold 0 val"):
        ds.set_splits({"folds": [{"train": ["c0", "c2"], "val": ["c1", "c3"]}]})


@pytest.mark.shared_data
def test_segmentation_split_stratifies_by_presence(tmp_path, shared_data):
    ds = import_dataset("msd", shared_data / "hippocampus", tmp_path / "h", link=True, limit=20,
                        labels="0=background,1=anterior,2=posterior").dataset
    splits = make_splits(ds, folds=4, test_fraction=0.2, seed=0)
    assert len(splits.test) == 4 and [len(f.val) for f in splits.folds] == [4, 4, 4, 4]
    assert splits.meta["method"] == "patient-grouped stratified greedy"


@pytest.mark.shared_data
def test_detection_split_on_bccd(tmp_path, shared_data):
    ds = import_dataset("voc", shared_data / "bccd/BCCD", tmp_path / "b", link=True).dataset
    splits = make_splits(ds, folds=5, test_fraction=0.2, seed=0)
    strata = Counter("+".join(sorted({b.label for b in c.boxes})) for c in ds.cases)
    test_strata = Counter("+".join(sorted({b.label for b in ds.case(i).boxes})) for i in splits.test)
    for key, count in strata.items():
        if count >= 20:
            assert abs(test_strata[key] / len(splits.test) - count / len(ds)) < 0.05
