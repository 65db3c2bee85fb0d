"""One report page per case: header, key images, measurement table, classification, quality and findings.

:func:`case_page` turns one task result (in memory, or read back by :mod:`deepmia.report.clinical.folder`) into
the plain data the template renders. Every visible text goes through the report language's gettext.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deepmia.image import Image
from deepmia.report.clinical import findings, keyimages

__all__ = ["case_page", "header", "largest_diameter_mm", "quality_flags", "saliency_of"]

Gettext = Callable[[str], str]


def _date(text: Any) -> str | None:
    s = str(text or "")
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}" if len(s) == 8 and s.isdigit() else (s or None)


def header(image: Image | None, name: str, *, _: Gettext) -> list[tuple[str, str]]:
    """(field, value) of the page header, from the source image's DICOM header ("not stated" when absent)."""
    meta = image.meta if image is not None else {}
    missing = _("not stated")
    series = meta.get("series_description")
    if meta.get("series_number") is not None:
        series = f"{meta['series_number']} {series or ''}".strip()
    uid = meta.get("series_uid")
    if uid:
        series = f"{series or missing} (UID …{str(uid)[-12:]})"
    return [(_("Case"), name), (_("Patient ID"), str(meta.get("patient_id") or missing)),
            (_("Study date"), _date(meta.get("study_date")) or missing),
            (_("Modality"), str(meta.get("modality") or missing)), (_("Series"), series or missing)]


def largest_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float | None:
    """The largest distance in mm between two voxel centres of a structure (None when it is empty).

    Uses the structure's boundary voxels, and their convex hull where one exists.

    Example:
        >>> m = np.zeros((5, 5, 5), bool); m[1:4, 2, 2] = True
        >>> largest_diameter_mm(m, np.diag([2.0, 1, 1, 1]))
        4.0
    """
    from scipy import ndimage as ndi
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    edge = mask & ~ndi.binary_erosion(mask)
    idx = np.argwhere(edge).astype(float)
    pts = np.c_[idx, np.zeros((len(idx), 3 - idx.shape[1]))] if idx.shape[1] < 3 else idx
    world = pts @ np.asarray(affine, float)[:3, :3].T
    if len(world) < 2:
        return 0.0
    try:
        world = world[ConvexHull(world[:, : mask.ndim]).vertices] if len(world) > 4 else world
    except (QhullError, ValueError):
        world = world[:: max(1, len(world) // 4000)]
    return float(pdist(world).max())


def quality_flags(image: Image, *, _: Gettext) -> dict[str, Any]:
    """The measures of :func:`deepmia.quality.assess` (value and pass/warn/fail) and the worst flag."""
    from deepmia.quality import assess

    report = assess(image.with_array(image.array[:1]) if image.array.shape[0] > 1 else image)
    rows = [{"name": m.name, "value": "—" if m.value is None else f"{m.value:.3g}", "status": m.status,
             "status_text": findings.status_text(m.status, _=_)} for m in report.measures if m.status != "info"]
    return {"status": report.status, "status_text": findings.status_text(report.status, _=_), "rows": rows}


def _side(world_x: float, centre_x: float, *, _: Gettext) -> str:
    return _("right") if world_x > centre_x else _("left")  # RAS+: +x points to the patient's right


def _structures(result: Any) -> list[dict[str, Any]]:
    labels, image = result.labels, result.image
    arr = labels.array[0]
    sizes = result.volumes()
    intensity = image.array[0] if image is not None and image.spatial_shape == labels.spatial_shape else None
    from deepmia.io import spacing_known

    out = []
    for value, name in sorted(result.label_names.items()):
        mask = arr == value
        s: dict[str, Any] = {"name": name, "voxels": int(mask.sum()), **{k: v for k, v in sizes[name].items()
                                                                         if k != "voxels"}}
        s["diameter_mm"] = largest_diameter_mm(mask, labels.affine) if spacing_known(labels) else None
        s["mean_intensity"] = float(intensity[mask].mean()) if intensity is not None and mask.any() else None
        out.append(s)
    return out


def _is_ct(image: Image | None) -> bool:
    return image is not None and str(image.meta.get("modality", "")).upper() == "CT"


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _segment_page(result: Any, page: dict[str, Any], _: Gettext) -> None:
    from deepmia.report.figures import geometry_notes

    structures = _structures(result)
    volume = result.labels.spatial_dims == 3
    page["table"] = {
        "columns": [_("Structure"), _("Volume (mL)") if volume else _("Area (mm²)"), _("Largest diameter (mm)"),
                    _("Mean intensity (HU)") if _is_ct(result.image) else _("Mean intensity"), _("Voxels")],
        "rows": [[s["name"], _fmt(s.get("volume_ml", s.get("area_mm2")), ".3f" if volume else ".1f"),
                  _fmt(s["diameter_mm"], ".1f"), _fmt(s["mean_intensity"], ".1f"), str(s["voxels"])]
                 for s in structures]}
    if result.image is not None:
        page["images"] = keyimages.structure_images(result.image, result.labels, result.label_names,
                                                    notes=geometry_notes)
        for im in page["images"]:
            im["caption"] = _("%(name)s at its largest cross-section") % {"name": im["title"]}
    page["findings"] = findings.segmentation_findings(structures, _=_)


def _detect_page(result: Any, page: dict[str, Any], _: Gettext) -> None:
    from deepmia.report.figures import geometry_known, geometry_notes

    image = result.image
    orientation, spacing = geometry_known(image) if image is not None else (False, False)
    d = result.boxes.shape[1] // 2 if result.boxes.size else (image.spatial_dims if image is not None else 2)
    centre_index = (np.asarray(image.spatial_shape, float) - 1) / 2 if image is not None else np.zeros(d)
    centre_world = (result.affine[:d, :d] @ centre_index + result.affine[:d, 3]) if image is not None else None
    rows = []
    for n, i in enumerate(result.kept(), start=1):
        box = result.boxes[i]
        mid = (box[:d] + box[d:]) / 2 - 0.5  # box edges -> voxel-centre index
        world = result.affine[:d, :d] @ mid + result.affine[:d, 3]
        place = (", ".join(f"{v:.1f}" for v in world) + " mm") if spacing else \
            (", ".join(f"{v:.0f}" for v in mid) + " " + _("px"))
        size = box[d:] - box[:d]
        extent = " × ".join(f"{v:.1f}" for v in size * np.asarray(image.spacing)[:d]) + " mm" if spacing else \
            " × ".join(f"{v:.0f}" for v in size) + " " + _("px")
        side = _side(world[0], centre_world[0], _=_) if orientation and centre_world is not None else _("not stated")
        rows.append([str(n), result.class_names[int(result.labels[i])], f"{result.scores[i]:.3f}", place, extent,
                     side])
    page["table"] = {"columns": [_("No."), _("Class"), _("Score"), _("Centre (world)"), _("Size"), _("Side")],
                     "rows": rows}
    if not spacing:
        page["notes"].append(_("The image states no pixel spacing: positions and sizes are in pixels."))
    if image is not None:
        page["images"] = keyimages.detection_images(image, result, notes=geometry_notes)
        for im in page["images"]:
            im["caption"] = im["title"] or _("All detections at or above the reporting score")
    counts = {c: int((result.labels[result.kept()] == k).sum()) for k, c in enumerate(result.class_names)}
    page["findings"] = findings.detection_findings(counts, result.min_score, _=_)


def saliency_of(result: Any, predictor: Any) -> Image | None:
    """The Grad-CAM map of the result's decided class on its image's grid (:mod:`deepmia.explain`)."""
    import torch

    from deepmia.explain.classify import explainable_model
    from deepmia.explain.overlay import map_on_image_grid
    from deepmia.explain.saliency import saliency_map, target_layer

    image = result.image
    x = torch.from_numpy(predictor.prepare(image)[None])
    model = explainable_model(predictor, predictor.clinical_features(image))
    cls = int(np.argmax(result.probabilities))
    activation = "sigmoid" if predictor.plan.multi_label else "softmax"
    m = saliency_map(model, x, method="gradcam", class_index=cls, layer=target_layer(model, x), activation=activation)
    return map_on_image_grid(m, image)


def _classify_page(result: Any, page: dict[str, Any], _: Gettext, predictor: Any) -> None:
    from deepmia.report.figures import geometry_notes

    probs = np.asarray(result.probabilities, float)
    top = int(np.argmax(probs))
    threshold = result.threshold or {}
    flag = threshold.get("uncertainty_flag")
    statement = findings.uncertainty_statement(float(result.uncertainty), flag, bool(result.low_confidence), _=_)
    page["classification"] = {
        "label": result.label, "probability": f"{probs[top]:.3f}", "statement": statement,
        "low_confidence": bool(result.low_confidence),
        "threshold": (_("%(t).3f for %(cls)s") % {"t": threshold["threshold"], "cls": threshold["class"]}
                      if threshold.get("class") is not None else None)}
    page["table"] = {"columns": [_("Class"), _("Calibrated probability")],
                     "rows": [[c, f"{p:.3f}"] for c, p in zip(result.class_names, probs, strict=True)]}
    if result.image is not None:
        saliency = result.saliency
        if saliency is None and predictor is not None:
            saliency = saliency_of(result, predictor)
        caption = f"{result.label} (p = {probs[top]:.3f})"
        page["images"] = [keyimages.classification_image(result.image, saliency, caption, notes=geometry_notes)]
        page["images"][0]["caption"] = (_("Grad-CAM saliency map: the regions that drove the decision (red: most).")
                                        if saliency is not None else _("The classified image."))
    page["findings"] = findings.classification_findings(result.label, float(probs[top]), threshold, statement, _=_)


def _register_page(reg: Any, page: dict[str, Any], _: Gettext) -> None:
    from deepmia.report.figures import geometry_notes

    page["images"] = [keyimages.checkerboard_image(reg.fixed, reg.before, reg.after, notes=geometry_notes(reg.fixed))]
    page["images"][0]["caption"] = _("Checkerboard of the fixed image and the moving image, before and after "
                                     "registration: edges line up across tiles when aligned.")
    s = reg.summary
    metric = str(s.get("metric", "")).upper()
    sign = -1.0 if s.get("metric") == "mse" else 1.0
    rows = [[_("Method"), str(s.get("method") or _("not stated"))]]
    if s.get("metric_before") is not None:
        rows += [[f"{metric} " + _("before"), f"{sign * s['metric_before']:.4g}"],
                 [f"{metric} " + _("after"), f"{sign * s['metric_after']:.4g}"]]
    page["table"] = {"columns": [_("Quantity"), _("Value")], "rows": rows}
    page["findings"] = findings.registration_findings(s, _=_)


def case_page(name: str, result: Any, *, _: Gettext, predictor: Any = None, quality: bool = True) -> dict[str, Any]:
    """The template data of one case's page.

    Args:
        name: The case's name (input name).
        result: A task result (segment, classify, detect) or a registration read back from its folder.
        _: The report language's gettext.
        predictor: The classification predictor, to compute a Grad-CAM map when the result holds none.
        quality: Run the image-quality measures on the input.

    Returns:
        ``{"name", "task", "header", "images", "table", "classification", "quality", "findings", "notes"}``.
    """
    from deepmia.io import image_stem

    image = result.fixed if result.task == "register" else getattr(result, "image", None)
    page: dict[str, Any] = {"name": image_stem(name) if name else name, "task": result.task, "images": [],
                            "table": None, "classification": None, "quality": None, "findings": [], "notes": []}
    page["header"] = header(image, page["name"], _=_)
    if result.task == "segment":
        _segment_page(result, page, _)
    elif result.task == "detect":
        _detect_page(result, page, _)
    elif result.task == "classify":
        _classify_page(result, page, _, predictor)
    else:
        _register_page(result, page, _)
    if quality and image is not None:
        page["quality"] = quality_flags(image, _=_)
    status = page["quality"]["status"] if page["quality"] else None
    page["findings"] += findings.common_findings(status, list(getattr(result, "warnings", []) or []), _=_)
    return page

