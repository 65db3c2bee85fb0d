"""``deepmia demo``: run the shipped models on the bundled samples and write one HTML page of what they found.

Each sample of ``samples/manifest.json`` is read and drawn (with its reference label map when it has one); a
sample that names a shipped model (``"model"``) is predicted through the task registry
(:func:`deepmia.tasks.load_predictor`): segmentation volumes by class name and Dice against the reference,
the classifier's class and probability against the reference class, the detector's boxes and counts. The page
itself is built by :mod:`deepmia.report.demo`, the figures by :mod:`deepmia.report.figures`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from deepmia.cli._common import console, progress
from deepmia.errors import DeepmiaError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MODELS = Path(__file__).resolve().parents[1] / "models"  # installed with the package
_INTRO = ("What deepmia does with the samples bundled in deepmia/samples: each image is read (NIfTI, DICOM "
          "series and multi-frame files, JPEG 2000, PNG, JPEG), drawn in radiological convention with orientation "
          "letters and a scale bar, and run through the shipped model that fits it. Sample sources and licences: "
          "deepmia/samples/README.md. Research use only: not a medical device.")


def _split_of(model_dir: Path, case: str) -> str | None:
    """Which split of the model's ``split.json`` holds ``case`` (``None``: not listed)."""
    path = model_dir / "split.json"
    if not path.is_file():
        return None
    split = json.loads(path.read_text())
    return next((name for name in ("train", "val", "test") if case in (split.get(name) or [])), None)


def _volumes(result: Any) -> dict[str, str]:
    """Size of each named label of a segmentation result, as text: mL for volumes, mm² for 2D images."""
    return {name: f"{v['volume_ml']:.3f} mL" if "volume_ml" in v else f"{v['area_mm2']:.1f} mm²"
            for name, v in result.volumes().items()}


def _segment(result: Any, image: Any, label: Any, model: str, stem: str, out: Path, section: Any) -> None:
    from deepmia.metrics.segmentation import dice_per_label
    from deepmia.report.figures import segmentation_figure

    names = dict(result.label_names)
    section.analysis.append(("predicted volume (model)", _volumes(result)))
    if label is not None:
        section.analysis.append(("reference volume (label file)", _volumes(replace(result, labels=label))))
        dice = dice_per_label(result.labels.array[0], label.array[0], list(names), both_empty=1.0)
        section.analysis.append(("Dice, model vs reference", {names[k]: round(d, 3) for k, d in dice.items()}))
    path = segmentation_figure(image, result.labels, out / f"{stem}_model.png", label_names=names,
                               title=f"model: {model}")
    section.figures.append((f"Model: {model}, its label map at the largest cross-section", path.name))


def _gradcam(predictor: Any, image: Any, class_index: int) -> Any:
    """The Grad-CAM map of the first member for ``class_index``, on the image's grid."""
    import torch

    from deepmia.explain.overlay import map_on_image_grid
    from deepmia.explain.saliency import saliency_map

    x = torch.from_numpy(predictor.prepare(image)[None])
    return map_on_image_grid(saliency_map(predictor.models[0], x, method="gradcam", class_index=class_index),
                             image)


def _classify(result: Any, image: Any, entry: dict[str, Any], model: str, stem: str, out: Path,
              section: Any, predictor: Any) -> None:
    import numpy as np

    from deepmia.report.figures import classification_figure

    probs = {c: float(p) for c, p in zip(result.class_names, result.probabilities, strict=True)}
    best = result.label if result.label in probs else result.class_names[int(np.argmax(result.probabilities))]
    section.analysis += [("predicted class (model)", result.label), ("probabilities", probs)]
    if result.threshold:
        section.analysis.append(("operating threshold", f"{result.threshold['threshold']:.3f} on "
                                                        f"p({result.threshold['class']})"))
    section.analysis.append(("uncertainty", f"{result.uncertainty:.4f}"
                                            + (" (low confidence: review)" if result.low_confidence else "")))
    if entry.get("reference"):
        agree = "agrees" if entry["reference"] == result.label else "disagrees"
        section.analysis.append(("reference class", f"{entry['reference']} (the model {agree})"))
    title = f"model: {result.label} (p = {probs[best]:.3f})"
    heat = None
    if getattr(predictor, "plan", None) is not None and not predictor.plan.tabular:
        heat = _gradcam(predictor, image, result.class_names.index(best))
    path = classification_figure(image, out / f"{stem}_model.png", title=title, saliency=heat)
    section.figures.append((f"Model: {model} says {result.label}"
                            + ("; Grad-CAM shows the regions that drove it" if heat is not None else ""), path.name))


def _detect(result: Any, image: Any, model: str, stem: str, out: Path, section: Any) -> None:
    from deepmia.report.figures import detection_figure

    keep = result.scores >= result.min_score
    counts = {c: int((result.labels[keep] == k).sum()) for k, c in enumerate(result.class_names)}
    section.analysis += [(f"objects with score ≥ {result.min_score:g} (model)", counts),
                         ("boxes below that score (not drawn)", int((~keep).sum()))]
    path = detection_figure(image, result.boxes, result.scores, result.labels, out / f"{stem}_model.png",
                            class_names=result.class_names, min_score=result.min_score)
    section.figures.append((f"Model: {model}, boxes with score ≥ {result.min_score:g}", path.name))


def _predict(entry: dict[str, Any], image: Any, label: Any, models: Path, predictors: dict[Path, Any],
             stem: str, out: Path, section: Any) -> None:
    """Run the sample's shipped model and add its figure and findings to ``section``."""
    from deepmia.tasks import load_predictor

    model_dir = models / entry["model"]
    model = f"models/{entry['model']}"
    if not (model_dir / "plan.json").is_file():
        section.notes.append(f"{model}: not found in {models}, so no prediction.")
        return
    if model_dir not in predictors:
        predictors[model_dir] = load_predictor(model_dir)
    result = predictors[model_dir].predict(image)
    section.analysis.append(("model", model))
    split = _split_of(model_dir, Path(entry["image"]).name.split(".")[0])
    if split:
        section.analysis.append(("this case in the model's data", {"train": "training split (seen in training)",
                                                                   "val": "validation split (not trained on)",
                                                                   "test": "test split (held out)"}[split]))
    if result.task == "segment":
        _segment(result, image, label, model, stem, out, section)
    elif result.task == "classify":
        _classify(result, image, entry, model, stem, out, section, predictors[model_dir])
    elif result.task == "detect":
        _detect(result, image, model, stem, out, section)
    section.notes += [f"Model check: {w}" for w in getattr(result, "warnings", [])]


def _run_sample(entry: dict[str, Any], root: Path, out: Path, index: int, models: Path,
                predictors: dict[Path, Any]) -> Any:
    from deepmia.io import read_image
    from deepmia.report.demo import DemoSection, image_facts
    from deepmia.report.figures import image_figure, segmentation_figure

    section = DemoSection(entry["name"], entry["image"])
    stem = f"sample{index:02d}"
    try:
        image = read_image(root / entry["image"])
        label = read_image(root / entry["label"], kind="label") if entry.get("label") else None
        if label is not None and not label.same_geometry(image):
            raise DeepmiaError("label geometry differs from its image", path=root / entry["label"])
        section.facts = image_facts(image)
        window = tuple(entry["window"]) if entry.get("window") else None
        if label is None:
            section.figures.append(("The image", image_figure(image, out / f"{stem}_image.png", window=window).name))
        else:
            names = _label_names(models / entry["model"]) if entry.get("model") else {}
            path = segmentation_figure(image, label, out / f"{stem}_reference.png", label_names=names,
                                       window=window, title="reference: the dataset's label file")
            section.figures.append(("Reference: the dataset's label map (drawn by hand)", path.name))
        if entry.get("model"):
            _predict(entry, image, label, models, predictors, stem, out, section)
    except DeepmiaError as exc:
        section.error = str(exc)
    return section


def _label_names(model_dir: Path) -> dict[int, str]:
    plan = model_dir / "plan.json"
    labels = json.loads(plan.read_text()).get("labels", {}) if plan.is_file() else {}
    return {int(k): v for k, v in labels.items() if k != "0"} if isinstance(labels, dict) else {}


def _print(section: Any) -> None:
    from deepmia.report.demo import format_value

    if section.error:
        console.print(f"[red]FAILED[/red] {section.name}: {section.error}")
        return
    facts = dict(section.facts)
    size = next(v for k, v in facts.items() if k.startswith("size"))
    spacing = facts["spacing (mm)"] + ("" if facts["spacing (mm)"] == "unknown" else " mm")
    console.print(f"{section.name:28s} {size:18s} spacing {spacing}  {facts['orientation']}  "
                  f"{facts['data type']}  modality={facts.get('modality', '-')}", soft_wrap=True)
    for key, value in section.analysis:
        console.print(f"{'':28s} {key}: {format_value(value)}", soft_wrap=True)


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for index.html and the figures."),
    samples: Path = typer.Option(SAMPLES, "--samples", help="Folder with a manifest.json of samples."),
    models: Path = typer.Option(MODELS, "--models", help="Folder of shipped models the manifest refers to."),
) -> None:
    """Run the shipped models on the bundled samples and write OUT/index.html with figures and findings."""
    from deepmia.report.demo import write_demo_page

    manifest = samples / "manifest.json"
    if not manifest.is_file():
        raise DeepmiaError("no manifest.json in the samples folder", path=samples)
    entries = json.loads(manifest.read_text())["samples"]
    out.mkdir(parents=True, exist_ok=True)
    sections, predictors = [], {}
    with progress(transient=True) as bar:
        task = bar.add_task("reading samples", total=len(entries))
        for i, entry in enumerate(entries):
            sections.append(_run_sample(entry, samples, out, i, models, predictors))
            bar.advance(task)
    for section in sections:
        _print(section)
    page = write_demo_page(sections, out, title="deepmia demo: the bundled samples", intro=_INTRO)
    console.print(f"wrote {page}")
    failed = sum(s.error is not None for s in sections)
    if failed:
        raise DeepmiaError(f"{failed} of {len(sections)} samples could not be read (see above)", path=samples)


def add_commands(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)
