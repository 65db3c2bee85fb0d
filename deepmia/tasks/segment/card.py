"""The model card (``README.md``) and ``metrics.json`` of a segmentation model directory, written from its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_model_card"]


def _fmt(summary: dict[str, Any], digits: int = 3) -> str:
    mean, lo, hi = summary["mean"], summary["ci_low"], summary["ci_high"]
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def write_model_card(model_dir: str | Path, *, dataset: dict[str, Any] | None = None) -> Path:
    """Write ``README.md`` and ``metrics.json`` from ``plan.json``, ``split.json`` and each fold's ``metrics.json``.

    Args:
        model_dir: The model directory.
        dataset: ``{"name", "license", "source", "description"}`` of the training data.

    Returns:
        The card's path.
    """
    model_dir = Path(model_dir)
    plan = json.loads((model_dir / "plan.json").read_text())
    folds = {
        int(p.parent.name.split("_")[1]): json.loads(p.read_text())
        for p in sorted(model_dir.glob("fold_*/metrics.json"))
    }
    (model_dir / "metrics.json").write_text(json.dumps({"folds": folds}, indent=2) + "\n")
    dataset = dataset or {}
    labels = {k: v for k, v in plan["labels"].items() if k != "0"}
    lines = [
        f"# {plan['dataset']} segmentation model (deepmia)",
        "",
        f"{plan['spatial_dims']}D {plan['network']} ({len(plan['network_params']['filters'])} stages, filters "
        f"{plan['network_params']['filters']}), patch {plan['patch_size']}, spacing {plan['target_spacing']} mm, "
        f"classes: {', '.join(labels.values())}. Channels: {', '.join(plan['channels'])}.",
        "",
        "## Data",
        "",
        f"- Dataset: {dataset.get('name', plan['dataset'])}. {dataset.get('description', '')}".rstrip(),
        f"- Source: {dataset.get('source') or 'see the dataset folder'}",
        f"- License of the training data: {dataset.get('license') or 'see the dataset'}",
        f"- Cases: {plan['fingerprint'].get('num_cases', '?')}; split by patient into {plan['folds']} folds "
        "(`split.json` lists each trained fold's train and val case ids).",
        "",
        "## Validation metrics (per fold, on that fold's validation cases, in their original geometry)",
        "",
        "Mean over cases with a bootstrap 95% interval; HD95 and ASSD in mm; NSD at 1 mm.",
        "",
        "| fold | class | Dice | HD95 | ASSD | NSD | cases |",
        "|---|---|---|---|---|---|---:|",
    ]
    for k, m in folds.items():
        for name in labels.values():
            c = m["per_class"][name]
            lines.append(
                f"| {k} | {name} | {_fmt(c['dice'])} | {_fmt(c['hd95'], 2)} | {_fmt(c['assd'], 2)} | "
                f"{_fmt(c['nsd'])} | {m['n_cases']} |"
            )
        lines.append(
            f"| {k} | mean | {_fmt(m['mean']['dice'])} | {_fmt(m['mean']['hd95'], 2)} | "
            f"{_fmt(m['mean']['assd'], 2)} | {_fmt(m['mean']['nsd'])} | {m['n_cases']} |"
        )
    lines += ["", "## Training", ""]
    for k, m in folds.items():
        t = m.get("training", {})
        lines.append(
            f"- fold {k}: {t.get('epochs')} epochs, {t.get('steps')} steps, {t.get('minutes')} min of training "
            f"({t.get('stopped')}), precision {t.get('precision')}, {t.get('threads')} threads on "
            f"{t.get('machine', {}).get('cores')} cores, torch {t.get('torch')}; best epoch {t.get('best_epoch')}; "
            f"post-processing: keep largest component for labels {m.get('postprocessing', {}).get('largest_component')}"
            f" (mean Dice without it: {m.get('postprocessing', {}).get('dice_without', float('nan')):.4f})."
        )
        if t.get("command"):
            lines.append(f"  Command: `{t['command']}`")
    lines += [
        "",
        f"Schedule: {plan['schedule']['optimizer']} lr {plan['schedule']['lr']}, poly decay over the "
        f"{plan['schedule']['time_budget_s']} s budget, batch {plan['batch_size']}, Dice + cross-entropy with deep "
        f"supervision, foreground oversampling {plan['oversample_foreground']}, augmentation preset "
        f"`{plan['augmentation']}`. Inference: sliding window overlap {plan['inference']['overlap']}, mirroring "
        f"along axes {plan['inference']['mirror_axes']}.",
        "",
        "## Intended use and limits",
        "",
        "- Research use: automatic segmentation of the structures above in images like the training data "
        "(same modality, field of view and resolution). Not a medical device; a clinician must review every result.",
        "- Validated only on the cross-validation cases listed in `split.json`, from the same source as the "
        "training data; performance on other scanners, protocols or populations is unknown.",
        "- Inputs with a different number of channels or dimensionality are refused; other spacings are "
        "resampled to the training spacing and the result is returned on the input's grid.",
        "",
        "Reproduce: see the commands above; `deepmia predict MODEL_DIR IN OUT` applies the model.",
        "",
    ]
    card = model_dir / "README.md"
    card.write_text("\n".join(lines))
    return card
