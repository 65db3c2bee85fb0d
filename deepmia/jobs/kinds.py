"""What each kind of job does: ``predict``, ``quality``, ``process``, ``register``.

A job function gets the claimed job and a :class:`JobContext` and writes its files into ``ctx.out`` (a folder
no one reads until the job is recorded done: the worker renames it into place first); it returns the outputs
to record, ``{kind, name, media_type, path}`` each, plus an optional predictions row.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from deepmia.data.catalog import Catalog
from deepmia.data.catalog.models import Instance
from deepmia.errors import InvalidArgumentError

from .queue import Claimed

__all__ = ["KINDS", "JobContext", "JobOutcome", "media_type_of", "read_files", "read_series_image", "series_files"]

MEDIA_TYPES = {".nii.gz": "application/gzip", ".nii": "application/octet-stream", ".json": "application/json",
               ".csv": "text/csv", ".png": "image/png", ".html": "text/html", ".pdf": "application/pdf",
               ".md": "text/markdown", ".dcm": "application/dicom"}


def media_type_of(path: str | os.PathLike[str]) -> str:
    """The media type the service sends a result file with."""
    name = str(path).lower()
    for suffix, media in MEDIA_TYPES.items():
        if name.endswith(suffix):
            return media
    return "application/octet-stream"


@dataclass
class JobContext:
    """What a running job may use: the catalog, its output folder, the models folder, progress and log."""

    catalog: Catalog
    out: Path
    models_dir: Path | None
    progress: Callable[[float], None]
    log: Callable[[str], None]


@dataclass
class JobOutcome:
    """A finished job's outputs (files in ``ctx.out``), summary and optional ``predictions`` row values."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None


def series_files(catalog: Catalog, series_id: int) -> tuple[list[Path], bool]:
    """The present files of a stored series in instance order, and whether they are DICOM.

    Raises:
        InvalidArgumentError: No such series, or none of its files is present.
    """
    with catalog.session() as s:
        rows = s.execute(select(Instance.path, Instance.sop_class_uid)
                         .where(Instance.series_id == series_id, Instance.missing_since.is_(None))
                         .order_by(Instance.instance_number, Instance.id)).all()
    if not rows:
        raise InvalidArgumentError(f"series {series_id} has no stored image", fix="upload it again")
    return [Path(p) for p, _ in rows], all(c is not None for _, c in rows)


def read_series_image(catalog: Catalog, series_id: int) -> Any:
    """A stored series as one :class:`~deepmia.image.Image` (a DICOM series stacked; an image file read)."""
    files, dicom = series_files(catalog, series_id)
    image = read_files(files, dicom)
    image.meta["case_id"] = f"series_{series_id}"
    return image


def read_files(files: list[Path], dicom: bool) -> Any:
    """A series' files as one image: several DICOM files stacked, one file (DICOM or not) read alone.

    A single DICOM file without patient geometry (an ultrasound frame, a secondary capture) is read on an identity
    grid instead of being refused.
    """
    from deepmia.io import read_image

    if dicom and len(files) > 1:
        from deepmia.io.dicom import read_series

        return read_series(files)
    return read_image(files[0])


def _input_of(catalog: Catalog, series_id: int, work: Path) -> Path:
    """The series as ``deepmia predict`` reads it: a folder of (links to) its DICOM files, or its image file."""
    files, dicom = series_files(catalog, series_id)
    if not dicom:
        return files[0]
    folder = work / f"series_{series_id}"
    folder.mkdir(parents=True, exist_ok=True)
    if len(files) == 1:  # one file is one input, read alone (see read_files)
        os.symlink(files[0], work / f"series_{series_id}.dcm")
        return work / f"series_{series_id}.dcm"
    for i, f in enumerate(files):
        os.symlink(f, folder / f"{i:06d}.dcm")
    return folder


def _output(path: Path, kind: str) -> dict[str, Any]:
    return {"kind": kind, "name": path.name, "media_type": media_type_of(path), "path": path}


def _kind_of(path: Path, out: Path) -> str:
    rel = path.relative_to(out).as_posix() if path.is_relative_to(out) else path.name
    if rel.startswith("probabilities/"):
        return "probabilities"
    if rel.endswith("saliency.nii.gz") or "saliency" in rel:
        return "saliency"
    if rel.endswith((".nii.gz", ".nii", ".png", ".nrrd", ".mha", ".tif", ".tiff")) and "/" not in rel:
        return "label_map"
    return "other"


def _measurement_rows(csv_path: Path) -> list[dict[str, Any]]:
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        try:
            row["value"] = float(row["value"])
        except (TypeError, ValueError):
            pass
    return rows


def _detections(result: Any) -> list[dict[str, Any]]:
    """Boxes of a detection result as the viewer reads them (voxel and world RAS mm corners, centre)."""
    import numpy as np

    from deepmia.tasks.detect.result import world_boxes

    rows = []
    boxes = np.asarray(result.boxes, float).reshape(len(result.scores), -1)
    padded = boxes if boxes.shape[1] == 6 else np.concatenate(
        [boxes[:, :2], np.zeros((len(boxes), 1)), boxes[:, 2:], np.ones((len(boxes), 1))], axis=1)
    world = world_boxes(padded, np.asarray(result.affine, float)) if len(boxes) else padded
    for i in result.kept():
        w = [round(float(v), 3) for v in world[i]]
        rows.append({"label": result.class_names[int(result.labels[i])], "score": round(float(result.scores[i]), 5),
                     "box_world_mm": w, "box_voxel": [round(float(v), 2) for v in boxes[i]],
                     "center_world_mm": [round((w[k] + w[k + 3]) / 2, 3) for k in range(3)]})
    return rows


def _saliency_maps(results: list[tuple[str, Any]], predictor: Any,
                   out: Path) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """Grad-CAM map of each classified input on its grid, ``<name>_saliency.nii.gz`` (kind ``saliency``).

    Returns the outputs and the results holding their maps (so that the report draws them, not computes them again).
    """
    from dataclasses import replace

    from deepmia.io import image_stem, write_image
    from deepmia.report.clinical.cases import saliency_of

    outputs, explained = [], []
    for name, result in results:
        path = out / f"{image_stem(name)}_saliency.nii.gz"
        saliency = saliency_of(result, predictor)
        write_image(saliency, path)
        outputs.append(_output(path, "saliency"))
        explained.append((name, replace(result, saliency=saliency)))
    return outputs, explained


def _report(results: list[tuple[str, Any]], options: dict[str, Any], model_dir: Any, predictor: Any,
            ctx: JobContext) -> list[dict[str, Any]]:
    """The clinical report (``report.html`` and ``report.pdf``) when ``options.report`` names its language."""
    if not options.get("report"):
        return []
    from deepmia.report.clinical.render import report_files

    ctx.log(f"report ({options['report']})")
    html, pdf = report_files(results, ctx.out, model_dir=model_dir, lang=options["report"], predictor=predictor)
    return [_output(html, "report_html"), _output(pdf, "report_pdf")]


def run_predict(job: Claimed, ctx: JobContext) -> JobOutcome:
    """Predict a stored series with a model directory, as ``deepmia predict MODEL SERIES OUT`` does."""
    from deepmia.engine.batch import run_batch
    from deepmia.tasks import load_predictor

    params = job.params
    options = dict(params.get("options") or {})
    predictor = load_predictor(params["model_dir"], **{k: v for k, v in options.items() if k in ("tta", "device")})
    ctx.log(f"model {params.get('model')} ({predictor.task}) on series {job.series_id}")
    ctx.progress(10)
    src = _input_of(ctx.catalog, job.series_id, ctx.out.parent / (ctx.out.name + ".input"))
    report = run_batch(predictor, src, ctx.out, options={k: str(v) for k, v in options.items()}, keep_results=True)
    ctx.progress(90)
    outputs, label_map = [], None
    for path in report.outputs:
        if path.name == "measurements.csv":
            rows = _measurement_rows(path)
            (ctx.out / "measurements.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
            outputs += [_output(ctx.out / "measurements.json", "measurements"), _output(path, "other")]
        elif path.name == "predictions.json":
            outputs.append(_output(path, "other"))
        else:
            kind = _kind_of(path, ctx.out)
            outputs.append(_output(path, kind))
            label_map = path if kind == "label_map" and label_map is None else label_map
    if predictor.task == "detect":
        boxes = [row for _, r in report.results for row in _detections(r)]
        (ctx.out / "detections.json").write_text(json.dumps(boxes, indent=1) + "\n", encoding="utf-8")
        outputs.append(_output(ctx.out / "detections.json", "detections"))
    if options.get("saliency") or options.get("report"):
        from deepmia.report.clinical.folder import read_prediction_folder

        folder = read_prediction_folder(ctx.out)  # the results again, with their images (the batch keeps none)
        cases = folder.cases
        if options.get("saliency") and folder.task == "classify":
            maps, cases = _saliency_maps(cases, folder.predictor, ctx.out)
            outputs += maps
        outputs += _report(cases, options, folder.model_dir, folder.predictor, ctx)
    outputs.append(_output(report.record, "other"))
    summaries = [r.summary() for _, r in report.results]
    ctx.log(f"predicted {len(report.predicted)} input(s); {len(report.skipped)} skipped")
    prediction = {"task": predictor.task, "model": str(params.get("model")), "path": label_map,
                  "scores": {"summary": summaries}}
    return JobOutcome(outputs, {"predicted": report.predicted, "skipped": report.skipped}, prediction)


def run_quality(job: Claimed, ctx: JobContext) -> JobOutcome:
    """Image-quality measures of a stored series (``deepmia quality``), as ``quality.json``."""
    from deepmia.quality import assess

    image = read_series_image(ctx.catalog, job.series_id)
    ctx.progress(30)
    report = assess(image, bias=bool((job.params.get("options") or {}).get("bias", False)))
    data = report.to_dict()
    data["path"] = f"series {job.series_id}"
    path = ctx.out / "quality.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    ctx.log(f"quality: {report.status}")
    return JobOutcome([_output(path, "other")], {"status": report.status})


def run_process(job: Claimed, ctx: JobContext) -> JobOutcome:
    """A pipeline of ``deepmia process`` steps on a stored series, written as NIfTI."""
    from deepmia.io import write_image
    from deepmia.processing import resolve_steps

    steps = list((job.params.get("options") or {}).get("steps") or [])
    plan = resolve_steps(steps)
    image = read_series_image(ctx.catalog, job.series_id)
    for i, (spec, params) in enumerate(plan):
        image = spec.func(image, **params)
        ctx.progress(100 * (i + 1) / (len(plan) + 1))
        ctx.log(f"step {spec.name}")
    path = ctx.out / f"series_{job.series_id}_processed.nii.gz"
    write_image(image, path)
    kind = "label_map" if image.kind == "label" else "other"
    return JobOutcome([_output(path, kind)], {"steps": steps})


def run_register(job: Claimed, ctx: JobContext) -> JobOutcome:
    """Register a moving series to a fixed one with a registration model; the warped image and transform."""
    from deepmia.tasks import load_predictor

    moving_id = int(job.params["moving_series_id"])
    options = job.params.get("options") or {}
    predictor = load_predictor(job.params["model_dir"], device=options.get("device", "cpu"))
    if predictor.task != "register":
        raise InvalidArgumentError(f"model {job.params.get('model')} is a {predictor.task} model, not registration")
    fixed, moving = read_series_image(ctx.catalog, job.series_id), read_series_image(ctx.catalog, moving_id)
    ctx.progress(20)
    result = predictor.predict((fixed, moving))
    paths = result.write(ctx.out, "")
    kinds = {"warped.nii.gz": "warped", "warped_label.nii.gz": "label_map"}
    outputs = [_output(p, kinds.get(p.name, "other")) for p in paths]
    outputs += _report([(f"series_{moving_id}", result)], options, job.params["model_dir"], None, ctx)
    return JobOutcome(outputs, {"summary": result.summary()})


KINDS: dict[str, Callable[[Claimed, JobContext], JobOutcome]] = {
    "predict": run_predict,
    "quality": run_quality,
    "process": run_process,
    "register": run_register,
}
