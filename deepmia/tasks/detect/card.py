"""The model card (``README.md``) of a detection model directory, written from its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deepmia.data.dataset import Dataset

__all__ = ["write_model_card"]


def _ci(summary: dict[str, Any] | None) -> str:
    if not summary or "low" not in summary:
        return ""
    return f" [{summary['low']:.3f}, {summary['high']:.3f}]"


def write_model_card(model_dir: str | Path, *, dataset: Dataset) -> Path:
    """Write ``README.md`` from ``plan.json``, ``split.json`` and ``metrics.json``; returns its path."""
    model_dir = Path(model_dir)
    plan = json.loads((model_dir / "plan.json").read_text())
    split = json.loads((model_dir / "split.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    val, tr = metrics["validation"], metrics["training"]
    coco = val["coco"]
    lines = [
        f"# {plan['dataset']} detection model (deepmia)",
        "",
        f"{plan['spatial_dims']}D RetinaNet (MONAI) on a ResNet-FPN {plan['network_params']}, images scaled by "
        f"{plan['scale']}, input {plan['input_size']}, anchors {plan['anchors']['base_shapes']} x "
        f"{plan['anchors']['feature_map_scales']} (k-means of the training boxes).",
        "",
        "## Data",
        f"- dataset: {dataset.name}; license: {dataset.spec.license or 'see the source'}; "
        f"source: {dataset.spec.source}",
        f"- classes: {', '.join(plan['class_names'])}",
        f"- training images: {len(split['train'])}, validation: {len(split['val'])}, test (held out, not read in "
        f"training): {len(split['test'])}; case ids in `split.json`",
        "",
        f"## Validation ({val['n_images']} images, TTA {'on' if val.get('tta') else 'off'}; 95% bootstrap intervals)",
        f"- mAP@[.5:.95]: {coco['map']:.3f}{_ci(coco.get('map_ci'))}",
        f"- mAP@0.5: {coco['map50']:.3f}{_ci(coco.get('map50_ci'))}",
        f"- AR@100: {coco['ar100']:.3f}",
        "- per class AP@0.5: " + ", ".join(f"{k} {v['ap50']:.3f}" for k, v in coco["per_class"].items()),
    ]
    if val.get("froc"):
        lines.append(f"- CPM (FROC, IoU {val['froc_iou']}): {val['froc']['cpm']:.3f}{_ci(val['froc'].get('cpm_ci'))}")
    lines += [
        "",
        "## Training",
        f"- {tr['epochs']} epochs in {tr['seconds']:.0f} s ({tr['stopped']}), best epoch {tr['best_epoch']}, "
        f"precision {plan['schedule']['precision']}, {plan['schedule']['threads']} thread(s)",
        "",
        "## Intended use and limits",
        "- Research use on images like the training data (same modality, magnification and staining); not a "
        "medical device.",
        "- The validation set selected the model, so its numbers are optimistic; score the test split once with "
        "`deepmia predict` and `deepmia evaluate detect`.",
        "",
    ]
    path = model_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
