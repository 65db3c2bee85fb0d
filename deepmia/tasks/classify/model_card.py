"""The model card (``README.md``) of a classification model directory, rendered from its JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepmia.data.dataset import Dataset

__all__ = ["write_model_card"]

MEDMNIST_ATTRIBUTION = (
    "Attribution: MedMNIST v2 (Yang J. et al., 'MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
    "biomedical image classification', Scientific Data 10:41, 2023; https://medmnist.com), licensed CC BY 4.0, and "
    "the source datasets it derives from. The images were not modified other than resizing and intensity "
    "standardisation at training time."
)


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    auc = entry.get("auc")
    d = entry.get("delong") or {}
    b = entry.get("bootstrap") or {}
    if d:
        return f"{auc:.3f} (DeLong 95% CI {d['ci_low']:.3f}-{d['ci_high']:.3f})"
    if b:
        low, high = b.get("low", float("nan")), b.get("high", float("nan"))
        return f"{auc:.3f} (bootstrap 95% CI {low:.3f}-{high:.3f})"
    return f"{auc:.3f}"


def _rows(m: dict[str, Any]) -> list[str]:
    rows = [f"| cases | {m.get('n_cases')} |"]
    for key in ("accuracy", "balanced_accuracy", "f1", "f1_macro", "ece", "ece_uncalibrated"):
        if m.get(key) is not None:
            rows.append(f"| {key.replace('_', ' ')} | {m[key]:.3f} |")
    auroc = m.get("auroc") or {}
    for name, entry in (auroc.get("per_class") or {}).items():
        rows.append(f"| AUROC {name} | {_ci(entry)} |")
    op = m.get("operating_point")
    if op:
        rows.append(f"| sensitivity / specificity at threshold {op['threshold']:.3f} | "
                    f"{op['sensitivity']:.3f} / {op['specificity']:.3f} |")
    return rows


def write_model_card(model_dir: str | Path, *, dataset: Dataset | None = None) -> Path:
    """Write ``model_dir/README.md`` from ``plan.json``, ``metrics.json``, ``calibration.json``, ``split.json``."""
    d = Path(model_dir)
    plan = json.loads((d / "plan.json").read_text())
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").exists() else {}
    split = json.loads((d / "split.json").read_text()) if (d / "split.json").exists() else {}
    info = json.loads((d / "dataset_info.json").read_text()) if (d / "dataset_info.json").exists() else {}
    if dataset is not None:
        info = {"name": dataset.spec.name, "license": dataset.spec.license, "source": dataset.spec.source,
                "description": dataset.spec.description}
        (d / "dataset_info.json").write_text(json.dumps(info, indent=1) + "\n")
    cal = metrics.get("calibration", {})
    training = metrics.get("training", {})
    lines = [
        f"# {info.get('name', plan['dataset'])} classifier",
        "",
        f"Classes: {', '.join(plan['class_names'])}{' (multi-label)' if plan['multi_label'] else ''}. "
        f"Input: {plan['spatial_dims']}D, {len(plan['channels'])} channel(s), resized to {plan['input_size']}.",
        f"Network: {plan['network']} {plan['network_params']}, {plan['members']} ensemble member(s)"
        + (f", fused with clinical columns {list(plan['tabular']['numeric']) + list(plan['tabular']['categorical'])}"
           f" ({plan['fusion_mode']})" if plan.get("tabular") else "") + ".",
        f"Trained by `deepmia train classify` in {training.get('total_seconds', 'n/a')} s on a CPU; "
        f"temperature {cal.get('temperature', float('nan')):.3f} and operating threshold "
        f"{cal.get('threshold', float('nan')):.3f} fitted on validation; cases with uncertainty above "
        f"{cal.get('uncertainty_flag', float('nan')):.4f} ({cal.get('uncertainty_flag_rule', '')}) are flagged "
        f"low-confidence.",
        "",
        "## Data",
        "",
        f"{info.get('description', '')}. Source: `{info.get('source', '')}`. "
        f"License: {info.get('license', 'unknown')}.",
        *([MEDMNIST_ATTRIBUTION] if "medmnist" in str(info).lower() else []),
        f"Cases: {len(split.get('train', []))} train, {len(split.get('val', []))} validation, "
        f"{len(split.get('test', []))} test (ids in `split.json`; the test cases were not used in training or "
        f"calibration).",
        "",
    ]
    for section, title in (("validation", "Validation"), ("test", "Test")):
        if section in metrics:
            lines += [f"## {title} metrics", "", "| metric | value |", "|---|---|", *_rows(metrics[section]), ""]
    lines += [
        "## Intended use and limits",
        "",
        "Research and teaching: a demonstration of calibrated, explained classification. Not a medical device; "
        "not validated for clinical decisions. Inputs must resemble the training data (same modality, "
        "dimensionality, channels and field of view); the operating threshold was chosen on validation data whose "
        "prevalence may differ from yours.",
        "",
        "Predict with `deepmia predict MODEL_DIR IN OUT`; explain with `deepmia explain MODEL_DIR IN OUT`.",
        "",
    ]
    path = d / "README.md"
    path.write_text("\n".join(lines))
    return path
