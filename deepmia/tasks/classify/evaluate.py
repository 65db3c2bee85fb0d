"""Evaluate a classification model directory on a dataset split (by default its held-out test cases).

Reports accuracy, balanced accuracy, AUROC per class and macro with DeLong and bootstrap 95% intervals,
sensitivity/specificity at the validation threshold and at a requested sensitivity (its threshold chosen on the
*validation* cases, then applied to the evaluated cases), F1, the confusion matrix, expected calibration error
before and after temperature scaling with a reliability diagram, and how accurate the low-confidence flag is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data.dataset import Dataset
from deepmia.engine.calibration import probabilities
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.metrics.classification import (
    ClassificationAccumulator,
    expected_calibration_error,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from deepmia.tasks.classify.data import encode_table, labels_of, load_cases
from deepmia.tasks.classify.plan import ClassifyPlan
from deepmia.tasks.classify.predict import Predictor

__all__ = ["evaluate", "reliability_diagram", "positive_last", "score"]


def positive_last(y: np.ndarray, prob: np.ndarray, plan: ClassifyPlan) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities and class names of a binary model ordered so its positive class is index 1.

    The metrics call class 1 of binary data positive; a model whose positive class is class 0 (BreastMNIST's
    ``malignant``) is scored on ``1 - y`` and the swapped columns. Other models are returned unchanged.
    """
    names = list(plan.class_names)
    if plan.multi_label or plan.num_outputs != 2 or plan.positive_index != 0:
        return y, prob, names
    return 1 - y, np.ascontiguousarray(prob[:, ::-1]), names[::-1]


def score(y: np.ndarray, prob: np.ndarray, plan: ClassifyPlan, *, threshold: float, n_resamples: int,
          ) -> dict[str, Any]:
    """Every classification metric with the plan's positive class as the positive, and sensitivity per class.

    Where a bootstrap resample is undefined (a small set with one class in some resamples) the AUROC intervals
    fall back to DeLong only, with a note, rather than failing after training.
    """
    yo, po, names = positive_last(y, prob, plan)

    def run(n: int) -> dict[str, Any]:
        acc = ClassificationAccumulator(names, multi_label=plan.multi_label, threshold=threshold, n_resamples=n)
        acc.update(yo, po)
        return acc.aggregate()

    try:
        m = run(n_resamples)
    except InvalidArgumentError:
        if not n_resamples:
            raise
        m = {**run(0), "note": "bootstrap intervals undefined on some resamples of this small set: DeLong only"}
    if not plan.multi_label:
        cm = np.asarray(m["confusion_matrix"], dtype=float)
        rows = cm.sum(axis=1)
        m["class_order"] = names  # rows and columns of the confusion matrix
        m["sensitivity_per_class"] = {n: (float(cm[i, i] / rows[i]) if rows[i] else None)
                                      for i, n in enumerate(names)}
        m["positive_class"] = plan.positive_class or (names[1] if len(names) == 2 else None)
    return m


def reliability_diagram(curves: dict[str, dict[str, Any]], path: Path, *, title: str) -> None:
    """Draw reliability curves (``{label: {"bins": CalibrationBins dict, "ece": float}}``) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for label, curve in curves.items():
        bins = curve["bins"]
        conf, acc, count = (np.asarray(bins[k], dtype=float) for k in ("confidence", "accuracy", "count"))
        keep = count > 0
        ax.plot(conf[keep], acc[keep], marker="o", markersize=3, label=f"{label} (ECE {curve['ece']:.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ids(dataset: Dataset, split: str, model_split: dict[str, Any]) -> list[str]:
    if split == "test":
        ids = list(dataset.splits.test) if dataset.splits else []
    elif split == "val":
        ids = list(model_split.get("val", []))
    elif split == "all":
        ids = [c.id for c in dataset.cases]
    else:
        raise InvalidArgumentError(f"unknown split {split!r}; valid: test, val, all")
    if not ids:
        raise DatasetError(f"the dataset has no {split} cases", path=dataset.root,
                           fix="run `deepmia dataset split` with a test fraction")
    return ids


def evaluate(
    model_dir: str | Path,
    dataset_dir: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    target_sensitivity: float | None = None,
    clinical: str | Path | None = None,
    record: bool = False,
    n_resamples: int = 2000,
    tabular_permuted: bool = False,
) -> dict[str, Any]:
    """Score a model on a dataset split; write ``out/metrics.json`` and ``out/reliability.png``.

    Args:
        model_dir: The model directory.
        dataset_dir: A classification dataset folder with the same classes.
        out: Output folder.
        split: ``test`` (the dataset's held-out cases), ``val`` (the model's validation cases) or ``all``.
        target_sensitivity: Also report the operating point reaching this sensitivity (binary models); its
            threshold is chosen on the model's validation cases.
        clinical: Clinical CSV for a fusion model.
        record: Also store the results as ``test`` in ``model_dir/metrics.json`` (``deepmia evaluate classify
            --record`` then refreshes the model card).
        n_resamples: Bootstrap resamples for the AUROC intervals.
        tabular_permuted: Shuffle the clinical rows across cases (an ablation: how much the table matters).

    Raises:
        DatasetError: The dataset's classes differ from the model's, the split is empty, or a bad clinical table.
        InvalidArgumentError: A fusion model without ``clinical``, or an image-only model with it.
    """
    predictor = Predictor(model_dir, clinical=clinical)  # a fusion model's Predictor reads its table
    plan = predictor.plan
    dataset = Dataset.load(dataset_dir)
    if dataset.spec.class_names() != plan.class_names:
        raise DatasetError(f"dataset classes {dataset.spec.class_names()} differ from the model's {plan.class_names}",
                           path=dataset.root)
    model_split = json.loads((Path(model_dir) / "split.json").read_text())
    ids = _ids(dataset, split, model_split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    rows = predictor.clinical_rows  # read and checked against the model's columns by the Predictor

    def run(case_ids: list[str], *, permute: bool = False) -> dict[str, np.ndarray]:
        tab = None
        if rows is not None and plan.tabular is not None:
            tab = encode_table(rows, case_ids, plan.tabular, path=clinical)
            if permute:
                tab = tab[np.random.default_rng(0).permutation(len(tab))]
        return predictor.predict_arrays(load_cases(dataset, case_ids, plan), tab)

    result = run(ids, permute=tabular_permuted)
    y = labels_of(dataset, ids, plan)
    prob = result["probabilities"]
    binary = plan.num_outputs == 2 and not plan.multi_label
    metrics = score(y, prob, plan, threshold=predictor.threshold, n_resamples=n_resamples)
    metrics["split"] = split
    metrics["temperature"] = predictor.temperature
    curves = {}
    if not plan.multi_label:
        y_o, raw, _ = positive_last(y, probabilities(result["logits"], multi_label=False), plan)
        ece_raw, bins_raw = expected_calibration_error(y_o, raw[:, 1] if binary else raw)
        metrics["ece_uncalibrated"] = ece_raw
        metrics["calibration_bins_uncalibrated"] = bins_raw.as_dict()
        curves = {"before temperature scaling": {"bins": bins_raw.as_dict(), "ece": ece_raw},
                  f"after (T={predictor.temperature:.2f})": {"bins": metrics["calibration_bins"],
                                                             "ece": metrics["ece"]}}
        correct = predictor.decide(prob) == y
        flagged = result["low_confidence"]
        metrics["low_confidence"] = {
            "flagged": int(flagged.sum()),
            "accuracy_flagged": float(correct[flagged].mean()) if flagged.any() else None,
            "accuracy_unflagged": float(correct[~flagged].mean()) if (~flagged).any() else None,
        }
    if binary and target_sensitivity is not None:
        val_ids = list(model_split.get("val", []))
        val_y, val_prob, _ = positive_last(labels_of(dataset, val_ids, plan), run(val_ids)["probabilities"], plan)
        chosen = threshold_for_sensitivity(val_y, val_prob[:, 1], sensitivity=target_sensitivity)
        y_o, prob_o, _ = positive_last(y, prob, plan)
        metrics["at_target_sensitivity"] = {
            "target": target_sensitivity, "threshold_from_validation": chosen["threshold"],
            **sensitivity_specificity(y_o, prob_o[:, 1], threshold=chosen["threshold"]),
        }
    if curves:
        reliability_diagram(curves, out / "reliability.png", title=f"{plan.dataset}: {split} ({len(ids)} cases)")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    if record:
        path = Path(model_dir) / "metrics.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        stored[split if split != "all" else "all_cases"] = metrics
        path.write_text(json.dumps(stored, indent=1, default=float) + "\n")
    return metrics
