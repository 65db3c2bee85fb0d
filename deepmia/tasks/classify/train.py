"""Train a classifier from a dataset folder into a model directory.

``train(dataset_dir, out_dir, time_budget_s=900)``: fingerprint -> plan -> measure speed and fit the network
width and ensemble size to the budget -> train each member with :class:`deepmia.engine.Trainer` (model selection
on validation AUROC) -> fit the temperature on the validation logits of the ensemble (with TTA) -> choose the
operating threshold and the low-confidence cut-off on validation -> write the model directory::

    MODEL_DIR/plan.json  calibration.json  split.json  metrics.json  README.md  fold_<k>/model_best.pt

Members are the dataset's cross-validation folds when it has several, otherwise seeds of its one split (the
official MedMNIST split). The test cases are never read here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepmia.data.dataset import Dataset
from deepmia.errors import DatasetError
from deepmia.tasks.classify.data import batches, encode_table, fit_table, labels_of, load_cases, read_table
from deepmia.tasks.classify.plan import ClassifyPlan, apply_overrides, make_plan

__all__ = ["train", "plan_dataset", "build_model", "fit_to_budget", "member_splits", "run_model", "youden_threshold",
           "WIDTH_LADDER"]

#: ResNet stage widths tried from the widest down when fitting the network to the budget.
WIDTH_LADDER = ([64, 128, 256, 512], [32, 64, 128, 256], [16, 32, 64, 128])
#: (width index, members) in order of preference.
CHOICES = ((0, 3), (1, 3), (0, 2), (1, 2), (2, 3), (0, 1), (1, 1), (2, 2), (2, 1))
Progress = Callable[[str], None]


def _is_multi_label(dataset: Dataset) -> bool:
    return any(isinstance(c.class_, list) for c in dataset.cases)


def member_splits(dataset: Dataset) -> tuple[list[dict[str, list[str]]], list[str]]:
    """The dataset's folds (train/val case ids) and test ids.

    Raises:
        DatasetError: The dataset has no splits with a validation set.
    """
    splits = dataset.splits
    if splits is None or not splits.folds or not all(f.val for f in splits.folds):
        raise DatasetError(
            "the dataset has no train/validation split", path=dataset.root,
            fix="run `deepmia dataset split DATASET` first (validation picks the model and calibrates it)",
        )
    return [{"train": list(f.train), "val": list(f.val)} for f in splits.folds], list(splits.test)


def plan_dataset(
    dataset: Dataset, *, time_budget_s: float | None = None, overrides: Sequence[str] | dict[str, Any] = (),
) -> ClassifyPlan:
    """Fingerprint the dataset's non-test cases and derive the plan (before the speed fit)."""
    from deepmia.data.stats import fingerprint

    folds, test = member_splits(dataset)
    fp = fingerprint(dataset.without_cases(test))
    plan = make_plan(fp, multi_label=_is_multi_label(dataset), time_budget_s=time_budget_s, num_folds=len(folds))
    return apply_overrides(plan, overrides) if overrides else plan


def build_model(plan: ClassifyPlan, *, network_params: dict[str, Any] | None = None) -> torch.nn.Module:
    """The network the plan describes (a fusion model when the plan has a clinical table)."""
    from deepmia.nn import build_network

    params = {**plan.network_params, **(network_params or {}), "dropout": plan.dropout}
    common = {"spatial_dims": plan.spatial_dims, "in_channels": len(plan.channels), "out_channels": plan.num_outputs}
    if plan.tabular is not None:
        return build_network("fusion", **common, tabular_features=plan.tabular.width, backbone=plan.network,
                             backbone_params=params, mode=plan.fusion_mode, hidden=plan.fusion_hidden,
                             dropout=plan.dropout)
    return build_network(plan.network, **common, **params)


def run_model(model: torch.nn.Module, x: torch.Tensor, tabular: torch.Tensor | None) -> torch.Tensor:
    """Logits of images ``x`` (with the encoded clinical features for a fusion model)."""
    return model(x) if tabular is None else model(x, tabular)


def _loss_fn(plan: ClassifyPlan, labels: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if plan.multi_label:
        pos = labels.mean(axis=0).clip(1e-3, 1 - 1e-3)
        pos_weight = torch.tensor(np.sqrt((1 - pos) / pos), dtype=torch.float32)
        return lambda z, y: F.binary_cross_entropy_with_logits(z, y.float(), pos_weight=pos_weight)
    weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
    smoothing = plan.schedule.label_smoothing
    return lambda z, y: F.cross_entropy(z, y, weight=weight, label_smoothing=smoothing)


def _optimizer(model: torch.nn.Module, plan: ClassifyPlan) -> torch.optim.Optimizer:
    s = plan.schedule
    if s.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=0.9, nesterov=True, weight_decay=s.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)


def logits_of(
    model: torch.nn.Module, images: np.ndarray, tabular: np.ndarray | None, *, batch_size: int = 128,
) -> np.ndarray:
    """Logits ``(N, K)`` of every image (no augmentation, no gradients)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            t = None if tabular is None else torch.from_numpy(tabular[i:i + batch_size])
            out.append(run_model(model, torch.from_numpy(images[i:i + batch_size]), t).float().numpy())
    return np.concatenate(out)


def _macro_auroc(labels: np.ndarray, logits: np.ndarray, multi_label: bool) -> float:
    from deepmia.engine.calibration import probabilities
    from deepmia.metrics.classification import auroc_report

    prob = probabilities(logits, multi_label=multi_label)
    return float(auroc_report(labels, prob, n_resamples=0)["macro"]["auc"])


def _stepper(plan: ClassifyPlan, widths: list[int], x: np.ndarray, y: np.ndarray,
             tab: np.ndarray | None) -> Callable[[str], None]:
    """One training step of the plan's network at these widths on a real batch, at a given precision."""
    from deepmia.engine.runtime import autocast

    model = build_model(plan, network_params={"widths": widths} if plan.network == "resnet" else None)
    opt = _optimizer(model, plan)
    loss_fn = _loss_fn(plan, y)
    batch = next(batches(x, y, plan, seed=0, tabular=tab))

    def step(precision: str) -> None:
        with autocast(precision):
            loss = loss_fn(run_model(model, batch[0], batch[2] if len(batch) > 2 else None).float(), batch[1])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _best_of(step: Callable[[str], None], precision: str, repeats: int = 2) -> float:
    step(precision)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        step(precision)
        best = min(best, time.perf_counter() - t)
    return best


def _runtime_settings(plan: ClassifyPlan, x: np.ndarray, y: np.ndarray, tab: np.ndarray | None
                      ) -> tuple[int, str, dict[str, Any]]:
    """Threads and precision from the narrowest network: one thread vs every core, each bf16 vs fp32.

    On a machine shared with other jobs, OpenMP threads that wait for a descheduled sibling can make every core
    slower than one (measured 4-10x on a loaded 2-core machine).
    """
    from deepmia.engine.runtime import choose_precision, configure_threads

    cores = configure_threads()
    step = _stepper(plan, WIDTH_LADDER[-1], x, y, tab)
    results = {}
    for n in sorted({1, cores}):
        torch.set_num_threads(n)
        choice = choose_precision(step, repeats=2)
        seconds = choice[f"{choice['precision']}_s"] or _best_of(step, "fp32")
        results[n] = {**choice, "seconds": seconds}
    threads = min(results, key=lambda n: results[n]["seconds"])
    torch.set_num_threads(threads)
    return threads, results[threads]["precision"], {str(n): r for n, r in results.items()}


def fit_to_budget(
    plan: ClassifyPlan, x: np.ndarray, y: np.ndarray, tab: np.ndarray | None, *, num_folds: int,
    progress: Progress | None = None,
) -> ClassifyPlan:
    """Settle the network width, ensemble size, threads, precision and epochs so training fits ``time_budget_s``.

    Speed is measured on this machine with real batches: threads and precision on the narrowest network, then
    one step per width (best of two after a warm-up) from narrow to wide, stopping at the first width too slow
    for one member. Each member must get at least ``schedule.min_epochs`` epochs; the first feasible entry of
    :data:`CHOICES` (widest network first, then most members) wins. Without a budget only threads and precision
    are set.
    """
    budget = plan.schedule.time_budget_s
    if budget is None and plan.schedule.threads:  # nothing to measure: the user fixed the runtime
        torch.set_num_threads(plan.schedule.threads)
        return plan
    threads, precision, runtime = _runtime_settings(plan, x, y, tab)
    say = progress or (lambda _m: None)
    say(f"runtime: {threads} thread(s), {precision} ("
        + ", ".join(f"{n} thread(s): {r['seconds'] * 1000:.0f} ms/step" for n, r in runtime.items()) + ")")
    if budget is None or plan.network != "resnet":
        return apply_overrides(plan, {"schedule.precision": precision, "schedule.threads": threads,
                                      "measurements": {"runtime": runtime}})
    steps = max(1, len(x) // min(plan.schedule.batch_size, len(x)))

    def epochs_for(seconds: float, members: int) -> int:
        return int(0.92 * budget / members / (seconds * steps * 1.15))  # + validation and augmentation

    timing: dict[int, float] = {}
    for wi in reversed(range(len(WIDTH_LADDER))):
        timing[wi] = _best_of(_stepper(plan, WIDTH_LADDER[wi], x, y, tab), precision)
        say(f"speed: widths {WIDTH_LADDER[wi]}: {timing[wi] * 1000:.0f} ms/step")
        if epochs_for(timing[wi], 1) < plan.schedule.min_epochs:
            break
    allowed = [m for m in (3, 2, 1) if num_folds == 1 or m == min(num_folds, 3)]
    feasible = [(wi, m) for wi, m in CHOICES if wi in timing and m in allowed
                and epochs_for(timing[wi], m) >= plan.schedule.min_epochs]
    wi, members = feasible[0] if feasible else (len(WIDTH_LADDER) - 1, allowed[-1])
    return apply_overrides(plan, {
        "network_params.widths": WIDTH_LADDER[wi],
        "members": members,
        # The estimate only picks the width and members; the budget itself stops training (the machine's load
        # may change while it runs), max_epochs stays the plan's upper bound.
        "schedule.precision": precision,
        "schedule.threads": threads,
        "measurements": {"runtime": runtime,
                         "seconds_per_step_by_widths": {str(WIDTH_LADDER[w]): t for w, t in timing.items()}},
    })


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity on validation (robust to a change in prevalence)."""
    cuts = np.unique(p)
    best, best_t = -1.0, 0.5
    pos, neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    for t in cuts:
        called = p >= t
        j = (called & (y == 1)).sum() / pos + (~called & (y == 0)).sum() / neg
        if j > best:
            best, best_t = j, float(t)
    return best_t


def train(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    time_budget_s: float | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    clinical: str | Path | None = None,
    clinical_columns: Sequence[str] | None = None,
    id_column: str = "case_id",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Plan, train, calibrate and write a classification model directory.

    Args:
        dataset_dir: A classification dataset folder with a train/validation split.
        out_dir: The model directory to write (a re-run resumes unfinished members from their checkpoints).
        time_budget_s: Wall-clock budget for training all members.
        overrides: Plan overrides (``"schedule.lr=0.001"``).
        clinical: A CSV of clinical features joined on ``id_column`` (the case id): trains a fusion model.
        clinical_columns: Columns of ``clinical`` to use (default: all).
        id_column: The case-id column of ``clinical``.
        progress: Called with one-line status messages.

    Returns:
        The validation metrics written to ``metrics.json``.

    Raises:
        DatasetError: Not a classification dataset, no validation split, or a bad clinical table.
    """
    from deepmia.engine.runtime import configure_threads, seed_everything
    from deepmia.engine.trainer import Trainer

    say = progress or (lambda _msg: None)
    configure_threads()
    dataset = Dataset.load(dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folds, test = member_splits(dataset)
    plan = plan_dataset(dataset, time_budget_s=time_budget_s, overrides=overrides)
    rows = None
    if clinical is not None:
        rows = read_table(clinical, id_column=id_column)
        known = {c.id for c in dataset.cases}
        stray = sorted(set(rows) - known)
        if stray:
            raise DatasetError(f"{len(stray)} clinical row(s) match no case id: {', '.join(stray[:5])}",
                               path=clinical, fix=f"the {id_column!r} column must hold the dataset's case ids")
        plan = apply_overrides(plan, {"tabular": fit_table(rows, folds[0]["train"], columns=clinical_columns,
                                                           id_column=id_column, path=clinical).model_dump()})
    say(f"plan: {plan.spatial_dims}D {plan.input_size}, {plan.network} {plan.network_params}, "
        f"class weights {plan.class_weights}")
    t_load = time.perf_counter()
    ids = sorted({c for f in folds for side in ("train", "val") for c in f[side]})
    index = {cid: i for i, cid in enumerate(ids)}
    images = load_cases(dataset, ids, plan)
    labels = labels_of(dataset, ids, plan)
    tab = None if rows is None or plan.tabular is None else encode_table(rows, ids, plan.tabular, path=clinical)
    say(f"loaded {len(ids)} cases in {time.perf_counter() - t_load:.0f} s")

    def subset(case_ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        sel = np.array([index[c] for c in case_ids])
        return images[sel], labels[sel], None if tab is None else tab[sel]

    x0, y0, t0 = subset(folds[0]["train"])
    plan_path = out / "plan.json"
    if plan_path.exists():  # resuming: keep the settled plan
        from deepmia.tasks.classify.plan import load_plan

        plan = load_plan(plan_path)
        if plan.schedule.threads:
            torch.set_num_threads(plan.schedule.threads)
    else:
        plan = fit_to_budget(plan, x0, y0, t0, num_folds=len(folds), progress=say)
        if overrides:  # the user's choices (widths, members, threads, ...) win over the measured ones
            plan = apply_overrides(plan, overrides)
            if plan.schedule.threads:
                torch.set_num_threads(plan.schedule.threads)
        plan_path.write_text(plan.model_dump_json(indent=1) + "\n")
    say(f"members {plan.members}, widths {plan.network_params.get('widths')}, up to {plan.schedule.max_epochs} "
        f"epochs each, {plan.schedule.precision}")
    members = [{"fold": k % len(folds), "seed": plan.seed + k} for k in range(plan.members)]
    histories = []
    budget = plan.schedule.time_budget_s
    for k, member in enumerate(members):
        fold = folds[member["fold"]]
        xt, yt, tt = subset(fold["train"])
        xv, yv, tv = subset(fold["val"])
        seed_everything(member["seed"])
        model = build_model(plan)
        loss_fn = _loss_fn(plan, yt)

        def step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], loss_fn: Any = loss_fn) -> torch.Tensor:
            return loss_fn(run_model(model, batch[0], batch[2] if len(batch) > 2 else None).float(), batch[1])

        def validate(model: torch.nn.Module, xv: Any = xv, yv: Any = yv, tv: Any = tv) -> dict[str, float]:
            z = logits_of(model, xv, tv)
            loss = float(_loss_fn(plan, yv)(torch.from_numpy(z), torch.from_numpy(yv)))
            return {"val_auroc": _macro_auroc(yv, z, plan.multi_label), "val_loss": loss}

        bs = min(plan.schedule.batch_size, len(xt))
        trainer = Trainer(
            model, _optimizer(model, plan), step, batches(xt, yt, plan, seed=member["seed"], tabular=tt),
            out_dir=out / f"fold_{k}", steps_per_epoch=max(1, len(xt) // bs), max_epochs=plan.schedule.max_epochs,
            time_budget_s=None if budget is None else budget / len(members), validate=validate,
            monitor="val_auroc", mode="max", precision=plan.schedule.precision, extra_state={"member": member},
        )
        state = trainer.fit()
        histories.append({"member": k, **member, "epochs": state.epoch, "best_epoch": state.best_epoch,
                          "best_val_auroc": state.best_metric, "seconds": round(state.elapsed_s, 1),
                          "stopped": state.stopped})
        say(f"member {k}: {state.epoch} epochs in {state.elapsed_s:.0f} s, best val AUROC {state.best_metric:.4f} "
            f"(epoch {state.best_epoch})")
    split = {"train": folds[0]["train"], "val": folds[0]["val"], "test": test, "members": members}
    if len(folds) > 1:
        split["folds"] = folds
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    return calibrate(out, dataset, folds, images=images, labels=labels, tab=tab, index=index, histories=histories)


def calibrate(
    out: Path, dataset: Dataset, folds: list[dict[str, list[str]]], *, images: np.ndarray, labels: np.ndarray,
    tab: np.ndarray | None, index: dict[str, int], histories: list[dict[str, Any]],
) -> dict[str, Any]:
    """Fit the temperature, operating threshold and low-confidence cut-off on validation; write metrics.

    With several folds each member is calibrated on its own fold's validation cases (out-of-fold logits); with
    one split the ensemble's validation logits are used.
    """
    from deepmia.engine.calibration import fit_temperature, probabilities
    from deepmia.metrics.classification import ClassificationAccumulator, expected_calibration_error
    from deepmia.report.model_card import write_model_card
    from deepmia.tasks.classify.predict import Predictor

    predictor = Predictor(out, calibrated=False)
    plan = predictor.plan
    val_ids = sorted({c for f in folds for c in f["val"]})
    sel = np.array([index[c] for c in val_ids])
    if len(folds) > 1:  # out-of-fold: each validation case scored by the members that did not train on it
        fold_of = {c: k for k, f in enumerate(folds) for c in f["val"]}
        member_sel = [[m for m, info in enumerate(predictor.members) if info["fold"] == fold_of[c]] for c in val_ids]
    else:
        member_sel = None
    result = predictor.predict_arrays(images[sel], None if tab is None else tab[sel], member_subsets=member_sel)
    yv = labels[sel]
    temperature = fit_temperature(result["logits"], yv, multi_label=plan.multi_label)
    prob_raw = probabilities(result["logits"], multi_label=plan.multi_label)
    prob = probabilities(result["logits"], temperature=temperature, multi_label=plan.multi_label)
    binary = plan.num_outputs == 2 and not plan.multi_label
    threshold = youden_threshold(yv, prob[:, 1]) if binary else 0.5
    unc = predictor.predict_arrays(images[sel], None if tab is None else tab[sel], member_subsets=member_sel,
                                   temperature=temperature)["uncertainty"]
    flag = float(np.quantile(unc, 0.9)) if len(unc) else math.inf
    calibration = {"temperature": temperature, "threshold": threshold, "uncertainty_flag": flag,
                   "uncertainty_flag_rule": "90th percentile of validation uncertainty"}
    (out / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")
    acc = ClassificationAccumulator(plan.class_names, multi_label=plan.multi_label, threshold=threshold,
                                    n_resamples=1000)
    acc.update(yv, prob)
    val = acc.aggregate()
    ece_raw = (expected_calibration_error(yv, prob_raw[:, 1] if binary else prob_raw)[0]
               if not plan.multi_label else None)
    metrics = {
        "validation": {**val, "ece_uncalibrated": ece_raw, "n_cases": len(val_ids)},
        "training": {"members": histories, "total_seconds": round(sum(h["seconds"] for h in histories), 1)},
        "calibration": calibration,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    write_model_card(out, task="classify", dataset=dataset)
    return metrics
