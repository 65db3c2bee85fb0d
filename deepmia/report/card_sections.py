"""The task-specific lines of a model card: one small function per task, each returning :class:`Sections`.

Each function reads only the plain dictionaries of a :class:`~deepmia.report.model_card.CardContext`
(``plan.json``, ``metrics.json``, ``split.json``, ``calibration.json``), so this module needs no task package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepmia.report.card_base import CardContext, Sections, ci, kv

__all__ = ["classify", "segment", "detect", "register", "collect_segment_folds"]


def _f(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``n/a`` for a missing one."""
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return "n/a"


# ----------------------------------------------------------------------------------------------- classify
def _auroc(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    auc = entry.get("auc")
    if entry.get("delong"):
        d = entry["delong"]
        return f"{auc:.3f} (DeLong 95% CI {d['ci_low']:.3f}-{d['ci_high']:.3f})"
    if entry.get("bootstrap"):
        b = entry["bootstrap"]
        return f"{auc:.3f} (bootstrap 95% CI {_f(b.get('low'))}-{_f(b.get('high'))})"
    return _f(auc)


def _classify_rows(m: dict[str, Any]) -> list[str]:
    rows = ["| metric | value |", "|---|---|", f"| cases | {m.get('n_cases')} |"]
    for key in ("accuracy", "balanced_accuracy", "f1", "f1_macro", "ece", "ece_uncalibrated"):
        if m.get(key) is not None:
            rows.append(f"| {key.replace('_', ' ')} | {m[key]:.3f} |")
    auroc = m.get("auroc") or {}
    for name, entry in (auroc.get("per_class") or {}).items():
        rows.append(f"| AUROC {name} | {_auroc(entry)} |")
    if len(auroc.get("per_class") or {}) > 1 and auroc.get("macro"):
        rows.append(f"| AUROC macro | {_auroc(auroc['macro'])} |")
    op = m.get("operating_point")
    if op:
        rows.append(f"| sensitivity / specificity at threshold {op['threshold']:.3f} | "
                    f"{op['sensitivity']:.3f} / {op['specificity']:.3f} |")
        if op.get("ppv") is not None:
            rows.append(f"| PPV / NPV at that threshold | {_f(op.get('ppv'))} / {_f(op.get('npv'))} |")
    return rows


def _positive_class(ctx: CardContext) -> str | None:
    for source in (ctx.calibration, ctx.metrics.get("calibration") or {}, ctx.plan):
        if source.get("positive_class") is not None:
            return str(source["positive_class"])
    return None


def classify(ctx: CardContext) -> Sections:
    """Classes, input, network and ensemble, calibration, validation and test tables."""
    plan, metrics = ctx.plan, ctx.metrics
    cal = ctx.calibration or metrics.get("calibration") or {}
    training = metrics.get("training") or {}
    tab = plan.get("tabular")
    clinical = (f", fused with clinical columns {list(tab['numeric']) + list(tab['categorical'])}"
                f" ({plan.get('fusion_mode')})" if tab else "")
    positive = _positive_class(ctx)
    summary = [
        f"Classes: {', '.join(plan['class_names'])}{' (multi-label)' if plan.get('multi_label') else ''}. "
        f"Input: {plan['spatial_dims']}D, {len(plan['channels'])} channel(s), resized to {plan['input_size']}."
    ]
    plan_lines = [
        f"- Network: {plan['network']} ({kv(plan.get('network_params'))}), {plan.get('members', 1)} ensemble "
        f"member(s){clinical}.",
        f"- Temperature {_f(cal.get('temperature'))} and operating threshold {_f(cal.get('threshold'))} fitted on "
        f"validation; cases with uncertainty above {_f(cal.get('uncertainty_flag'), 4)} "
        f"({cal.get('uncertainty_flag_rule', '')}) are flagged low-confidence.",
    ]
    if positive:
        plan_lines.append(f"- Positive (disease) class: {positive}; the operating threshold "
                          f"{_f(cal.get('threshold'))} applies to its probability.")
    validation = []
    for key, title in (("validation", "Validation"), ("test", "Test (held out)")):
        if key in metrics:
            validation += [f"### {title}", "", *_classify_rows(metrics[key]), ""]
    members = training.get("members") or []
    train_lines = [f"- Trained by `deepmia train classify` in {training.get('total_seconds', 'n/a')} s on a CPU."]
    train_lines += [
        f"- Member {m.get('member')} (fold {m.get('fold')}, seed {m.get('seed')}): {m.get('epochs')} epochs, best "
        f"epoch {m.get('best_epoch')} (validation AUROC {_f(m.get('best_val_auroc'))}), {m.get('seconds')} s"
        + (f", stopped by {m['stopped']}" if m.get("stopped") else "") + "."
        for m in members
    ]
    sched = plan.get("schedule") or {}
    if sched:
        train_lines.append(f"- Schedule: {sched.get('optimizer')} lr {sched.get('lr')}, batch "
                           f"{sched.get('batch_size')}, {sched.get('precision')}, time budget "
                           f"{sched.get('time_budget_s')} s; augmentation: {kv(plan.get('augmentation'))}.")
    return Sections(
        title=f"{ctx.dataset_name} classifier",
        summary=summary,
        body={
            "Plan": plan_lines,
            "Validation metrics": validation,
            "Training": train_lines,
            "Intended use and limits": [
                "- Research and teaching: a demonstration of calibrated, explained classification. The operating "
                "threshold was chosen on validation data whose prevalence may differ from yours."],
            "Use": ["`deepmia explain MODEL_DIR IN OUT` shows which regions drove each prediction."],
        },
    )


# ----------------------------------------------------------------------------------------------- segment
def collect_segment_folds(model_dir: Path) -> dict[str, Any]:
    """Gather ``fold_<k>/metrics.json`` into ``metrics.json`` (``{"folds": {k: ...}}``) and return it."""
    folds = {
        int(p.parent.name.split("_")[1]): json.loads(p.read_text())
        for p in sorted(model_dir.glob("fold_*/metrics.json"))
    }
    (model_dir / "metrics.json").write_text(json.dumps({"folds": folds}, indent=2) + "\n")
    return {"folds": {str(k): v for k, v in folds.items()}}


def _mean_ci(summary: dict[str, Any], digits: int = 3) -> str:
    return f"{summary['mean']:.{digits}f}{ci(summary, digits)}"


def segment(ctx: CardContext) -> Sections:
    """Network, patch and spacing, per-fold per-class Dice/HD95/ASSD/NSD with intervals, training per fold."""
    plan = ctx.plan
    folds = ctx.metrics.get("folds", {})
    labels = {k: v for k, v in plan["labels"].items() if k != "0"}
    params = plan.get("network_params", {})
    summary = [
        f"{plan['spatial_dims']}D {plan['network']} ({len(params.get('filters', []))} stages, filters "
        f"{params.get('filters')}), patch {plan['patch_size']}, spacing {plan['target_spacing']} mm, classes: "
        f"{', '.join(labels.values())}. Channels: {', '.join(plan['channels'])}."
    ]
    fp = plan.get("fingerprint", {})
    data = [f"- Cases: {fp.get('num_cases', '?')}; split by patient into {plan.get('folds')} folds "
            "(`split.json` lists each trained fold's train and val case ids)."]
    table = [
        "Per fold, on that fold's validation cases, in their original geometry: mean over cases with a bootstrap "
        "95% interval; HD95 and ASSD in mm; NSD at 1 mm.",
        "",
        "| fold | class | Dice | HD95 | ASSD | NSD | cases |",
        "|---|---|---|---|---|---|---:|",
    ]
    for k, m in folds.items():
        rows = [(name, m["per_class"][name]) for name in labels.values()] + [("mean", m["mean"])]
        table += [f"| {k} | {name} | {_mean_ci(c['dice'])} | {_mean_ci(c['hd95'], 2)} | {_mean_ci(c['assd'], 2)} | "
                  f"{_mean_ci(c['nsd'])} | {m['n_cases']} |" for name, c in rows]
    train_lines = []
    for k, m in folds.items():
        t, post = m.get("training", {}), m.get("postprocessing", {})
        train_lines.append(
            f"- fold {k}: {t.get('epochs')} epochs, {t.get('steps')} steps, {t.get('minutes')} min of training "
            f"({t.get('stopped')}), precision {t.get('precision')}, {t.get('threads')} threads on "
            f"{t.get('machine', {}).get('cores')} cores, torch {t.get('torch')}; best epoch {t.get('best_epoch')}; "
            f"post-processing: keep largest component for labels {post.get('largest_component')} (mean Dice "
            f"without it: {_f(post.get('dice_without'), 4)})."
        )
        if t.get("command"):
            train_lines.append(f"  Command: `{t['command']}`")
    s, inf = plan["schedule"], plan["inference"]
    train_lines += [
        "",
        f"Schedule: {s['optimizer']} lr {s['lr']}, poly decay over the {s['time_budget_s']} s budget, batch "
        f"{plan['batch_size']}, Dice + cross-entropy with deep supervision, foreground oversampling "
        f"{plan['oversample_foreground']}, augmentation preset `{plan['augmentation']}`.",
    ]
    return Sections(
        title=f"{plan['dataset']} segmentation model (deepmia)",
        summary=summary,
        body={
            "Data": data,
            "Plan": [f"- Inference: sliding window overlap {inf['overlap']}, mirroring along axes "
                     f"{inf['mirror_axes']}, keep largest component for labels {inf.get('largest_component')}."],
            "Validation metrics": table,
            "Training": train_lines,
            "Intended use and limits": [
                "- Automatic segmentation of the structures above. Validated only on the cross-validation cases "
                "listed in `split.json`, from the same source as the training data.",
                "- Inputs with a different number of channels or dimensionality are refused; other spacings are "
                "resampled to the training spacing and the result is returned on the input's grid.",
            ],
        },
    )


# ----------------------------------------------------------------------------------------------- detect
def _detect_row(name: str, m: dict[str, Any]) -> str:
    coco, froc = m["coco"], m.get("froc") or {}
    cpm = f"{froc['cpm']:.3f}{ci(froc.get('cpm_ci'))}" if froc else "n/a"
    return (f"| {name} | {m.get('n_images')} | {coco['map']:.3f}{ci(coco.get('map_ci'))} | "
            f"{coco['map50']:.3f}{ci(coco.get('map50_ci'))} | {_f(coco.get('map75'))} | {_f(coco.get('ar100'))} | "
            f"{cpm} |")


def detect(ctx: CardContext) -> Sections:
    """Network, anchors and inference settings; mAP/AR/CPM per split with intervals, AP per class; training."""
    plan, metrics = ctx.plan, ctx.metrics
    names = plan["class_names"]
    anchors, inf = plan.get("anchors", {}), plan.get("inference", {})
    summary = [
        f"{plan['spatial_dims']}D RetinaNet (MONAI `monai.apps.detection`) on a ResNet-FPN "
        f"({kv(plan.get('network_params'))}); images scaled by {plan.get('scale')} (network input "
        f"{plan.get('input_size')}); anchors {anchors.get('base_shapes')} x feature-map scales "
        f"{anchors.get('feature_map_scales')} (k-means of the training boxes). Classes: "
        + ", ".join(f"{n} (category {i + 1})" for i, n in enumerate(names)) + "."
    ]
    plan_lines = [
        f"- Inference: score threshold {inf.get('score_threshold')}, per-class NMS {inf.get('nms_threshold')}, "
        f"mirror test-time augmentation {'on' if inf.get('tta') else 'off'}"
        + (f" fused by weighted box fusion (IoU {inf['wbf_iou']})" if inf.get("tta") and inf.get("wbf_iou") else "")
        + f", at most {inf.get('max_detections')} boxes per image.",
    ]
    counts = (plan.get("fingerprint") or {}).get("box_counts") or {}
    if counts:
        plan_lines.append("- Training boxes per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    splits = [(k, t) for k, t in (("validation", "validation (chose the epoch and TTA; optimistic)"),
                                  ("test", "test (held out)")) if k in metrics]
    table = ["95% intervals: bootstrap over images. CPM: mean FROC sensitivity at 1/8 to 8 false positives per "
             f"image, a hit at IoU >= {metrics.get('validation', {}).get('froc_iou', 0.5)}.", "",
             "| split | images | mAP@[.5:.95] | mAP@0.5 | mAP@0.75 | AR@100 | CPM |",
             "|---|---:|---|---|---:|---:|---|", *(_detect_row(t, metrics[k]) for k, t in splits), "",
             "Per class, AP@0.5 / AP@[.5:.95]:", "", "| split | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key, _title in splits:
        per = metrics[key]["coco"].get("per_class", {})
        table.append(f"| {key} | " + " | ".join(
            f"{_f(per.get(n, {}).get('ap50'))} / {_f(per.get(n, {}).get('ap'))}" for n in names) + " |")
    tr, sched = metrics.get("training", {}), plan.get("schedule", {})
    train_lines = [
        f"- {tr.get('epochs')} epochs in {_f(tr.get('seconds'), 0)} s ({tr.get('stopped')}), best epoch "
        f"{tr.get('best_epoch')} (validation mAP@0.5 without TTA {_f(tr.get('best_val_map50_no_tta'))}); precision "
        f"{sched.get('precision')}, {sched.get('threads')} thread(s), lr {sched.get('lr')}, batch "
        f"{sched.get('batch_size')}, time budget {sched.get('time_budget_s')} s.",
        f"- Augmentation: {kv(plan.get('augmentation'))}.",
        "- Training curve: `fold_0/training_curve.png`; per-epoch log: `fold_0/log.csv`.",
    ]
    if (metrics.get("test") or {}).get("note"):
        train_lines.append(f"- Test scoring: {metrics['test']['note']}.")
    return Sections(
        title=f"{plan['dataset']} detection model (deepmia)",
        summary=summary,
        body={
            "Plan": plan_lines,
            "Validation metrics": table,
            "Training": train_lines,
            "Intended use and limits": [
                "- The validation set selected the model, so its numbers are optimistic; score the test split once "
                "with `deepmia predict` and `deepmia evaluate detect`."],
            "Use": ["`OUT/predictions.json` holds COCO results (`image_id` = file stem, `category_id`, `bbox` = "
                    "[x, y, width, height] in pixels, `score`), `OUT/categories.json` the class names."],
        },
    )


# ----------------------------------------------------------------------------------------------- register
def register(ctx: CardContext) -> Sections:
    """Method (affine head + diffeomorphic field), augmentation and loss, training, validation Dice and folding."""
    p, m = ctx.plan, ctx.metrics
    precision = m.get("precision") or {}
    data = [] if ctx.split else [f"- Cases: {m.get('n_train')} training, {m.get('n_val')} validation, "
                                 f"{m.get('n_test')} held-out test cases."]
    method = [
        f"- The moving image is put on the fixed grid (padded to a multiple of {p.get('multiple')}) after matching "
        "intensity centres of mass; one forward pass predicts an affine (GlobalNet-style head) and a diffeomorphic "
        "VoxelMorph field at half resolution (MONAI), composed as x -> A(x + u(x)).",
        f"- Network parameters: {kv(p.get('network_params'))}; grid {p.get('grid_shape')}.",
        f"- Trained on random pairs of the {m.get('n_train')} training cases, each moving image moved by a random "
        f"affine (rotation {p.get('augment_rotation_deg')} deg, scale {p.get('augment_scale')}, shift "
        f"{p.get('augment_shift')} voxels); loss = local NCC (kernel {p.get('lncc_kernel')}) + "
        f"{p.get('smoothness_weight')} x bending energy + {p.get('dice_weight')} x soft Dice of labels "
        f"{p.get('labels')}.",
    ]
    validation = [f"- Mean label Dice of warped validation pairs {_f(m.get('best_val_dice'), 4)}, worst folding "
                  f"fraction {m.get('best_val_folding')} (best epoch {m.get('best_epoch')})."]
    train_lines = [
        f"- {m.get('epochs')} epochs ({m.get('steps')} steps of {p.get('batch_size')} pairs) in "
        f"{_f(m.get('train_seconds'), 0)} s on a CPU ({p.get('precision')}), learning rate "
        f"{p.get('learning_rate')}, time budget {p.get('time_budget_s')} s; inference in "
        f"{p.get('inference_precision')}.",
    ]
    for stage in ("train", "inference"):
        r = precision.get(stage) or {}
        if r.get("fp32_s") is not None:
            train_lines.append(f"- Measured {stage} step: fp32 {_f(r['fp32_s'])} s, bf16 {_f(r.get('bf16_s'))} s; "
                               f"chosen {r.get('precision')}.")
    return Sections(
        title=f"Learned registration ({p.get('network')}): affine and deformable in one forward pass",
        summary=[],
        body={
            "Data": data,
            "Plan": method,
            "Validation metrics": validation,
            "Training": train_lines,
            "Intended use and limits": [
                "- Inter-subject alignment of images like the training data. Not validated on other anatomy or "
                "modalities; a pair unlike the training data can diverge (detected and reported, not written)."],
            "Use": ["`deepmia register FIXED MOVING --out DIR --method learned --model MODEL_DIR` (`--figure` "
                    "draws checkerboard, overlay and deformation-grid figures)."],
        },
    )
