"""Train a classifier from a dataset folder into a model directory.

``train(dataset_dir, out_dir, time_budget_s=900)``: fingerprint -> plan -> measure speed and fit the network
width and ensemble size to the budget -> train each member with :class:`deepmia.engine.Trainer` (model selection
on validation AUROC) -> fit the temperature on the validation logits of the ensemble (with TTA) -> choose the
operating threshold and the low-confidence cut-off on validation -> write the model directory::

    MODEL_DIR/plan.json  calibration.json  split.json  metrics.json  fold_<k>/model_best.pt

(``deepmia train classify`` then writes the model card, ``README.md``, with deepmia.report.model_card.)

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
from deepmia.engine.trainer import build_optimizer
from deepmia.errors import DatasetError
from deepmia.tasks.classify.data import batches, encode_table, fit_table, labels_of, load_cases, read_table
from deepmia.tasks.classify.model import build_model, run_model
from deepmia.tasks.classify.plan import ClassifyPlan, apply_overrides, make_plan

__all__ = ["train", "plan_dataset", "fit_to_budget", "member_splits", "youden_threshold",
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
    positive_class: str | None = None,
) -> ClassifyPlan:
    """Fingerprint the dataset's non-test cases and derive the plan (before the speed fit).

    The positive class is ``positive_class``, else ``dataset.json``'s, else the rule of
    :func:`~deepmia.tasks.classify.plan.positive_class_of`.
    """
    from deepmia.data.stats import fingerprint

    folds, test = member_splits(dataset)
    fp = fingerprint(dataset.without_cases(test))
    plan = make_plan(fp, multi_label=_is_multi_label(dataset), time_budget_s=time_budget_s, num_folds=len(folds),
                     channel_counts=array_channel_counts(dataset, folds[0]["train"][0]),
                     positive_class=positive_class or dataset.spec.positive_class)
    return apply_overrides(plan, overrides) if overrides else plan


def array_channel_counts(dataset: Dataset, case_id: str) -> list[int]:
    """Array channels of each of a case's channel files (3 for an RGB photograph, as segmentation plans them)."""
    from deepmia.io import read_image

    return [read_image(dataset.path(rel)).num_channels for rel in dataset.case(case_id).images]


def _loss_fn(plan: ClassifyPlan, labels: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if plan.multi_label:
        pos = labels.mean(axis=0).clip(1e-3, 1 - 1e-3)
        pos_weight = torch.tensor(np.sqrt((1 - pos) / pos), dtype=torch.float32)
        return lambda z, y: F.binary_cross_entropy_with_logits(z, y.float(), pos_weight=pos_weight)
    weight = None if plan.class_weights is None else torch.tensor(plan.class_weights, dtype=torch.float32)
    smoothing = plan.schedule.label_smoothing
    return lambda z, y: F.cross_entropy(z, y, weight=weight, label_smoothing=smoothing)


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
    opt = build_optimizer(model, name=plan.schedule.optimizer, lr=plan.schedule.lr,
                                    weight_decay=plan.schedule.weight_decay)
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
    t = time.perf_counter()
    step(precision)  # warm-up
    if time.perf_counter() - t > 2.0:  # a slow step: one timed repeat is precise enough and saves the budget
        repeats = 1
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        step(precision)
        best = min(best, time.perf_counter() - t)
    return best


def _runtime_settings(plan: ClassifyPlan, x: np.ndarray, y: np.ndarray, tab: np.ndarray | None, *,
                      repeats: int = 2) -> tuple[int, str, dict[str, Any]]:
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
        choice = choose_precision(step, repeats=repeats)
        seconds = choice[f"{choice['precision']}_s"] or _best_of(step, "fp32")
        results[n] = {**choice, "seconds": seconds}
    threads = min(results, key=lambda n: results[n]["seconds"])
    torch.set_num_threads(threads)
    return threads, results[threads]["precision"], {str(n): r for n, r in results.items()}


def fit_to_budget(
    plan: ClassifyPlan, x: np.ndarray, y: np.ndarray, tab: np.ndarray | None, *, num_folds: int,
    progress: Progress | None = None, spent_s: float = 0.0, reserve_s: float = 0.0,
) -> ClassifyPlan:
    """Settle the network width, ensemble size, threads, precision and epochs so training fits ``time_budget_s``.

    Speed is measured on this machine with real batches: threads and precision on the narrowest network, then
    one step per width (best of two after a warm-up) from narrow to wide, stopping at the first width too slow
    for one member. Each member must get at least ``schedule.min_epochs`` epochs; the first feasible entry of
    :data:`CHOICES` (widest network first, then most members) wins. Without a budget only threads and precision
    are set.

    The budget covers the whole command: the training time is what is left of it after ``spent_s`` (planning and
    loading), the measurements themselves and ``reserve_s`` (calibration and writing after training). A width
    whose step, at least twice its narrower neighbour's, could not fit is not measured.
    """
    t_fit = time.perf_counter()
    budget = plan.schedule.time_budget_s
    if budget is None and plan.schedule.threads:  # nothing to measure: the user fixed the runtime
        torch.set_num_threads(plan.schedule.threads)
        return plan
    threads, precision, runtime = _runtime_settings(plan, x, y, tab, repeats=2 if (budget or 0) >= 900 else 1)
    say = progress or (lambda _m: None)
    say(f"runtime: {threads} thread(s), {precision} ("
        + ", ".join(f"{n} thread(s): {r['seconds'] * 1000:.0f} ms/step" for n, r in runtime.items()) + ")")
    if budget is None or plan.network != "resnet":
        return apply_overrides(plan, {"schedule.precision": precision, "schedule.threads": threads,
                                      "measurements": {"runtime": runtime}})
    steps = max(1, len(x) // min(plan.schedule.batch_size, len(x)))

    def epochs_for(seconds: float, members: int) -> int:
        left = budget - spent_s - reserve_s - (time.perf_counter() - t_fit)
        return int(0.92 * max(left, 0.0) / members / (seconds * steps * 1.15))  # + validation and augmentation

    timing: dict[int, float] = {}
    for wi in reversed(range(len(WIDTH_LADDER))):
        if timing and epochs_for(2 * timing[wi + 1], 1) < plan.schedule.min_epochs:
            say(f"speed: widths {WIDTH_LADDER[wi]} not measured (at least twice as slow as "
                f"{WIDTH_LADDER[wi + 1]}: too slow for the budget)")
            break
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


def post_training_seconds(plan: ClassifyPlan, n_val: int, step_s: float | None, *, members_per_case: int) -> float:
    """Seconds kept from the budget for what follows training: calibration and writing the model directory.

    20 s of fixed cost (imports, bootstrap intervals, the model card), 3% of the budget for a machine whose load
    changes, and two passes of the ensemble with its test-time mirrors over the ``n_val`` calibration cases, each
    case taking at most a training step's share per case (a forward pass costs about a third of it).
    """
    mirrors = 1 + (len(plan.augmentation.mirror_axes) if plan.tta else 0)
    per_case = (step_s or 0.0) / plan.schedule.batch_size
    return 20.0 + 0.03 * (plan.schedule.time_budget_s or 0.0) + 2 * n_val * members_per_case * mirrors * per_case


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


def _settle_plan(
    plan_path: Path, plan: ClassifyPlan, train0: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    folds: list[dict[str, list[str]]], *, overrides: Sequence[str] | dict[str, Any], positive_class: str | None,
    spent_s: float, say: Progress,
) -> ClassifyPlan:
    """The plan of a resumed run (kept, with a newly named positive class), or fitted to the budget and written."""
    if plan_path.exists():  # resuming: keep the settled plan
        from deepmia.tasks.classify.plan import load_plan

        plan = load_plan(plan_path)
        if positive_class is not None and positive_class != plan.positive_class:
            plan = apply_overrides(plan, {"positive_class": positive_class})
            plan_path.write_text(plan.model_dump_json(indent=1) + "\n")
        if plan.schedule.threads:
            torch.set_num_threads(plan.schedule.threads)
        return plan
    n_val = len(folds[0]["val"]) * min(len(folds), 3)
    plan = fit_to_budget(plan, *train0, num_folds=len(folds), progress=say, spent_s=spent_s,
                         reserve_s=post_training_seconds(plan, n_val, None, members_per_case=1))
    if overrides:  # the user's choices (widths, members, threads, ...) win over the measured ones
        plan = apply_overrides(plan, overrides)
        if plan.schedule.threads:
            torch.set_num_threads(plan.schedule.threads)
    plan_path.write_text(plan.model_dump_json(indent=1) + "\n")
    return plan


def _training_deadline(plan: ClassifyPlan, folds: list[dict[str, list[str]]], members: list[dict[str, Any]], *,
                       started: float) -> float | None:
    """When training must end (``perf_counter`` time) so calibration and writing still fit the budget."""
    budget = plan.schedule.time_budget_s
    if budget is None:
        return None
    steps = plan.measurements.get("seconds_per_step_by_widths") or {}
    reserve = post_training_seconds(
        plan, len(calibration_cases(folds, members)[0]), steps.get(str(plan.network_params.get("widths"))),
        members_per_case=1 if len(folds) > 1 else len(members))
    return started + budget - reserve


def _train_member(
    plan: ClassifyPlan, k: int, member: dict[str, int], train_set: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    val_set: tuple[np.ndarray, np.ndarray, np.ndarray | None], out: Path, time_budget_s: float | None,
) -> tuple[dict[str, Any], Any]:
    """Train ensemble member ``k`` into ``out/fold_<k>`` (model selection on validation AUROC); its history row.

    Run by several processes (:func:`deepmia.engine.parallel.launch`), each takes its share of the plan's batch
    from its own shuffle of the training cases; the global batch and the steps stay those of one process.
    """
    from deepmia.engine.parallel import rank, world_size
    from deepmia.engine.runtime import seed_everything
    from deepmia.engine.trainer import Trainer

    (xt, yt, tt), (xv, yv, tv) = train_set, val_set
    seed_everything(member["seed"])
    model = build_model(plan)
    loss_fn = _loss_fn(plan, yt)

    def step(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return loss_fn(run_model(model, batch[0], batch[2] if len(batch) > 2 else None).float(), batch[1])

    def validate(model: torch.nn.Module) -> dict[str, float]:
        z = logits_of(model, xv, tv)
        loss = float(_loss_fn(plan, yv)(torch.from_numpy(z), torch.from_numpy(yv)))
        return {"val_auroc": _macro_auroc(yv, z, plan.multi_label), "val_loss": loss}

    bs = min(plan.schedule.batch_size, len(xt))
    share = plan if world_size() == 1 else apply_overrides(
        plan, {"schedule.batch_size": max(1, plan.schedule.batch_size // world_size())})
    trainer = Trainer(
        model, build_optimizer(model, name=plan.schedule.optimizer, lr=plan.schedule.lr,
                               weight_decay=plan.schedule.weight_decay),
        step, batches(xt, yt, share, seed=member["seed"] + 7919 * rank(), tabular=tt),
        out_dir=out / f"fold_{k}", steps_per_epoch=max(1, len(xt) // bs), max_epochs=plan.schedule.max_epochs,
        time_budget_s=time_budget_s, validate=validate, monitor="val_auroc", mode="max",
        precision=plan.schedule.precision, extra_state={"member": member},
    )
    state = trainer.fit()
    return {"member": k, **member, "epochs": state.epoch, "best_epoch": state.best_epoch,
            "best_val_auroc": state.best_metric, "seconds": round(state.elapsed_s, 1), "stopped": state.stopped}, state


def train(
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    time_budget_s: float | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    clinical: str | Path | None = None,
    clinical_columns: Sequence[str] | None = None,
    id_column: str = "case_id",
    positive_class: str | None = None,
    processes: int = 1,
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
        positive_class: The positive (disease) class whose probability the operating threshold applies to;
            default ``dataset.json``'s ``positive_class``, else the documented rule (``plan.positive_class_of``).
        processes: Processes training each member together (DistributedDataParallel; gloo on the CPU).
        progress: Called with one-line status messages.

    Returns:
        The validation metrics written to ``metrics.json``.

    Raises:
        DatasetError: Not a classification dataset, no validation split, or a bad clinical table.
    """
    from deepmia.engine.parallel import launch
    from deepmia.engine.runtime import configure_threads

    t_start = time.perf_counter()  # the budget covers the whole command, planning and calibration included
    say = progress or (lambda _msg: None)
    configure_threads()
    dataset = Dataset.load(dataset_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folds, test = member_splits(dataset)
    plan = plan_dataset(dataset, time_budget_s=time_budget_s, overrides=overrides, positive_class=positive_class)
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
        f"class weights {plan.class_weights}, positive class {plan.positive_class or 'none (argmax)'}")
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

    plan = _settle_plan(out / "plan.json", plan, subset(folds[0]["train"]), folds, overrides=overrides,
                        positive_class=positive_class, spent_s=time.perf_counter() - t_start, say=say)
    say(f"members {plan.members}, widths {plan.network_params.get('widths')}, up to {plan.schedule.max_epochs} "
        f"epochs each, {plan.schedule.precision}")
    members = [{"fold": k % len(folds), "seed": plan.seed + k} for k in range(plan.members)]
    histories = []
    deadline = _training_deadline(plan, folds, members, started=t_start)
    split: dict[str, Any] = {"train": folds[0]["train"], "val": folds[0]["val"], "test": test, "members": []}
    if len(folds) > 1:
        split["folds"] = folds
    for k, member in enumerate(members):
        fold = folds[member["fold"]]
        left = None if deadline is None else max(1.0, (deadline - time.perf_counter()) / (len(members) - k))
        history, state = launch(_train_member, processes, plan, k, member, subset(fold["train"]),
                                subset(fold["val"]), out, left)
        history["processes"] = processes
        histories.append(history)
        say(f"member {k}: {state.epoch} epochs in {state.elapsed_s:.0f} s, best val AUROC {state.best_metric:.4f} "
            f"(epoch {state.best_epoch})")
        split["members"] = members[:k + 1]  # the model directory predicts from the first trained member on
        (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    save_uncalibrated(out, plan)
    try:
        return calibrate(out, dataset, folds, images=images, labels=labels, tab=tab, index=index, histories=histories)
    except Exception as exc:
        say(f"calibration failed ({type(exc).__name__}: {exc}); the trained model is saved in {out} and predicts "
            "uncalibrated (temperature 1, threshold 0.5); run the same command again to calibrate it")
        raise


def save_uncalibrated(out: Path, plan: ClassifyPlan) -> None:
    """Write a neutral ``calibration.json`` (temperature 1, threshold 0.5): the model predicts if a later step fails.

    :func:`calibrate` replaces it.
    """
    cal = {"temperature": 1.0, "threshold": 0.5, "calibrated": False,
           "positive_class": None if plan.multi_label else plan.positive_class, "positive_index": plan.positive_index}
    (out / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")


def calibration_cases(
    folds: list[dict[str, list[str]]], members: list[dict[str, Any]],
) -> tuple[list[str], list[list[int]] | None]:
    """Validation case ids to calibrate on and, with several folds, the members scoring each (out-of-fold).

    With several folds only the folds that have a trained member count: a member validated on fold ``k`` never
    trained on its cases, and a fold without a member (5 folds, 3 members) has no out-of-fold scorer, so its
    cases are left out. With one split every member scores every validation case (``None``).
    """
    if len(folds) == 1:
        return sorted(folds[0]["val"]), None
    trained = sorted({int(m["fold"]) for m in members})
    val_ids = sorted({c for k in trained for c in folds[k]["val"]})
    fold_of = {c: k for k in trained for c in folds[k]["val"]}
    return val_ids, [[m for m, info in enumerate(members) if info["fold"] == fold_of[c]] for c in val_ids]


def calibrate(
    out: Path, dataset: Dataset, folds: list[dict[str, list[str]]], *, images: np.ndarray, labels: np.ndarray,
    tab: np.ndarray | None, index: dict[str, int], histories: list[dict[str, Any]],
) -> dict[str, Any]:
    """Fit the temperature, operating threshold and low-confidence cut-off on validation; write metrics.

    With several folds each member is calibrated on its own fold's validation cases (out-of-fold logits); with
    one split the ensemble's validation logits are used.
    """
    from deepmia.engine.calibration import fit_temperature, probabilities
    from deepmia.metrics.classification import expected_calibration_error
    from deepmia.tasks.classify.evaluate import positive_last, score
    from deepmia.tasks.classify.predict import Predictor

    predictor = Predictor(out, calibrated=False)  # the encoded clinical features are passed to predict_arrays
    plan = predictor.plan
    val_ids, member_sel = calibration_cases(folds, predictor.members)
    sel = np.array([index[c] for c in val_ids])
    result = predictor.predict_arrays(images[sel], None if tab is None else tab[sel], member_subsets=member_sel)
    yv = labels[sel]
    temperature = fit_temperature(result["logits"], yv, multi_label=plan.multi_label)
    prob_raw = probabilities(result["logits"], multi_label=plan.multi_label)
    prob = probabilities(result["logits"], temperature=temperature, multi_label=plan.multi_label)
    binary = plan.num_outputs == 2 and not plan.multi_label
    pos = plan.positive_index
    threshold = youden_threshold((yv == pos).astype(np.int64), prob[:, pos]) if binary and pos is not None else 0.5
    unc = predictor.predict_arrays(images[sel], None if tab is None else tab[sel], member_subsets=member_sel,
                                   temperature=temperature)["uncertainty"]
    flag = float(np.quantile(unc, 0.9)) if len(unc) else math.inf
    calibration = {
        "temperature": temperature, "threshold": threshold, "calibrated": True,
        "positive_class": plan.positive_class if not plan.multi_label else None,
        "positive_index": pos,
        "decision": ("per-label probability >= threshold" if plan.multi_label else
                     f"{plan.class_names[pos]} when its probability >= threshold, else the other class" if binary
                     else "the most probable class (argmax)"),
        "uncertainty_flag": flag, "uncertainty_flag_rule": "90th percentile of validation uncertainty",
    }
    (out / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")
    val = score(yv, prob, plan, threshold=threshold, n_resamples=1000)
    y_o, raw_o, _ = positive_last(yv, prob_raw, plan)
    ece_raw = (expected_calibration_error(y_o, raw_o[:, 1] if binary else raw_o)[0]
               if not plan.multi_label else None)
    metrics = {
        "validation": {**val, "ece_uncalibrated": ece_raw, "n_cases": len(val_ids)},
        "training": {"members": histories, "total_seconds": round(sum(h["seconds"] for h in histories), 1)},
        "calibration": calibration,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return metrics
