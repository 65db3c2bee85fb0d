"""``deepmia demo``: read the bundled samples, print what was found, write an HTML page with slices and metadata."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from deepmia.cli._common import console, progress
from deepmia.errors import DeepmiaError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass
class SampleResult:
    """What the demo found for one sample."""

    name: str
    path: str
    summary: dict[str, Any] = field(default_factory=dict)
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name)
    error: str | None = None


def _pictures(image, label, window, out: Path, stem: str) -> list[tuple[str, str]]:
    from deepmia.display import PLANES, overlay_labels, save_png, slice_for_display, to_rgb

    planes = PLANES if image.spatial_dims == 3 and min(image.spatial_shape) > 1 else ("axial",)
    pictures = []
    for plane in planes:
        sl, aspect = slice_for_display(image, plane)
        rgb = to_rgb(sl, window)
        if label is not None:
            lab, _ = slice_for_display(label, plane)
            rgb = overlay_labels(rgb, lab[0])
        name = f"{stem}_{plane}.png"
        save_png(rgb, out / name, aspect=aspect)
        pictures.append((plane if image.spatial_dims == 3 else "image", name))
    return pictures


def _segment(entry: dict[str, Any], image, label, models: Path, out: Path, stem: str, result: SampleResult) -> None:
    """Run the sample's shipped model (``"model"`` in the manifest) and add its overlay and scores."""
    from deepmia.tasks.segment.predict import Predictor

    model_dir = models / entry["model"]
    if not (model_dir / "plan.json").is_file():
        result.summary["model"] = f"{entry['model']}: not found in {models}"
        return
    predictor = _predictor_cache.get(model_dir) or Predictor(model_dir)
    _predictor_cache[model_dir] = predictor
    pred = predictor.predict(image)
    info: dict[str, Any] = {"model": f"models/{entry['model']}"}
    split = model_dir / "split.json"
    case = Path(entry["image"]).name.split(".")[0]
    if split.is_file():
        ids = json.loads(split.read_text())
        info["case in training set"] = case in ids.get("train", [])
    if label is not None:
        from deepmia.metrics.segmentation import dice_per_label

        names = {int(k): name for k, name in predictor.plan.labels.items() if k != "0"}
        for k, d in dice_per_label(pred.array[0], label.array[0], list(names), both_empty=1.0).items():
            info[f"Dice {names[k]}"] = round(d, 4)
    result.summary["prediction"] = info
    result.pictures += [(f"{c} (model)", f) for c, f in _pictures(image, pred, None, out, f"{stem}_pred")]


_predictor_cache: dict[Path, Any] = {}


def _run_sample(entry: dict[str, Any], root: Path, out: Path, index: int, models: Path = MODELS) -> SampleResult:
    from deepmia.io import read_image

    path = root / entry["image"]
    result = SampleResult(entry["name"], entry["image"])
    try:
        image = read_image(path)
        label = read_image(root / entry["label"], kind="label") if entry.get("label") else None
        if label is not None and not label.same_geometry(image):
            raise DeepmiaError("label geometry differs from its image", path=root / entry["label"])
        result.summary = image.summary()
        result.summary.pop("affine", None)
        if label is not None:
            import numpy as np

            values, counts = np.unique(label.array, return_counts=True)
            voxel_ml = float(np.prod(image.spacing)) / 1000.0
            result.summary["label volumes (mL)"] = {
                int(v): round(int(c) * voxel_ml, 3) for v, c in zip(values, counts, strict=True) if v != 0
            }
        window = tuple(entry["window"]) if entry.get("window") else None
        result.pictures = _pictures(image, label, window, out, f"sample{index:02d}")
        if entry.get("model"):
            _segment(entry, image, label, models, out, f"sample{index:02d}", result)
    except DeepmiaError as exc:
        result.error = str(exc)
    return result


def _html(results: list[SampleResult]) -> str:
    rows = []
    for r in results:
        if r.error:
            body = f"<p class='error'>{html.escape(r.error)}</p>"
        else:
            meta = "".join(
                f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v, default=str))}</td></tr>"
                for k, v in r.summary.items()
            )
            figs = "".join(
                f"<figure><img src='{html.escape(f)}' alt='{html.escape(r.name)} {html.escape(c)}'>"
                f"<figcaption>{html.escape(c)}</figcaption></figure>"
                for c, f in r.pictures
            )
            body = f"<div class='figs'>{figs}</div><table>{meta}</table>"
        rows.append(f"<section><h2>{html.escape(r.name)}</h2><p><code>{html.escape(r.path)}</code></p>{body}</section>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}figure{display:inline-block;margin:4px}"
        "img{image-rendering:pixelated;border:1px solid #ccc}table{border-collapse:collapse;font-size:90%}"
        "th,td{border:1px solid #ddd;padding:2px 6px;text-align:left}.error{color:#b00}section{margin-bottom:2em}"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>deepmia demo</title>"
        f"<style>{style}</style></head><body><h1>deepmia demo: bundled samples</h1>"
        "<p>Slices in radiological convention (patient right on the left). Sample sources and licenses: "
        "see <code>deepmia/samples/README.md</code>.</p>" + "".join(rows) + "</body></html>"
    )


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for index.html and the slice pictures."),
    samples: Path = typer.Option(SAMPLES, "--samples", help="Folder with a manifest.json of samples."),
    models: Path = typer.Option(MODELS, "--models", help="Folder of shipped models the manifest refers to."),
) -> None:
    """Read the bundled samples, print what was found and write OUT/index.html with slices and metadata."""
    manifest = samples / "manifest.json"
    if not manifest.is_file():
        raise DeepmiaError("no manifest.json in the samples folder", path=samples)
    entries = json.loads(manifest.read_text())["samples"]
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with progress(transient=True) as bar:
        task = bar.add_task("reading samples", total=len(entries))
        for i, entry in enumerate(entries):
            results.append(_run_sample(entry, samples, out, i, models))
            bar.advance(task)
    for r in results:
        if r.error:
            console.print(f"[red]FAILED[/red] {r.name}: {r.error}")
        else:
            s = r.summary
            console.print(
                f"{r.name:28s} {str(tuple(s['shape'])):22s} spacing {s['spacing_mm']} mm  {s['orientation']}  "
                f"{s['dtype']}  modality={s.get('modality') or '-'}"
            )
            if "prediction" in s:
                console.print(f"{'':28s} prediction: {s['prediction']}", soft_wrap=True)
    (out / "index.html").write_text(_html(results), encoding="utf-8")
    console.print(f"wrote {out / 'index.html'}")
    failed = sum(r.error is not None for r in results)
    if failed:
        raise DeepmiaError(f"{failed} of {len(results)} samples could not be read (see above)", path=samples)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)
