"""The "findings" paragraph of a report: sentences filled from the structured results by fixed templates.

No language model writes anything here: every sentence is a gettext message with named placeholders, so the
Chinese catalog translates the templates and the numbers stay those of the measurement table.

Example:
    >>> from deepmia.report.clinical.i18n import translations
    >>> _ = translations("en").gettext
    >>> segmentation_findings([{"name": "anterior", "volume_ml": 1.5, "diameter_mm": 20.0}], _=_)
    ['Automatic segmentation found 1 of 1 structures.', 'anterior: volume 1.50 mL, largest diameter 20.0 mm.']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["status_text", "segmentation_findings", "classification_findings", "detection_findings",
           "registration_findings", "common_findings", "uncertainty_statement"]

Gettext = Callable[[str], str]


def status_text(status: str, *, _: Gettext) -> str:
    """A quality flag (``pass``, ``warn``, ``fail``) in the report's language."""
    return {"pass": _("pass"), "warn": _("warn"), "fail": _("fail")}.get(status, status)


def segmentation_findings(structures: Sequence[Mapping[str, Any]], *, _: Gettext) -> list[str]:
    """One sentence on how many structures were found, then one per structure (volume or area, diameter)."""
    found = [s for s in structures if s.get("volume_ml") or s.get("area_mm2")]
    out = [_("Automatic segmentation found %(found)d of %(total)d structures.")
           % {"found": len(found), "total": len(structures)}]
    for s in structures:
        if not (s.get("volume_ml") or s.get("area_mm2")):
            out.append(_("%(name)s: not found.") % {"name": s["name"]})
            continue
        size = (_("volume %(value).2f mL") % {"value": s["volume_ml"]} if s.get("volume_ml") is not None
                else _("area %(value).1f mm²") % {"value": s["area_mm2"]})
        if s.get("diameter_mm") is not None:
            out.append(_("%(name)s: %(size)s, largest diameter %(diameter).1f mm.")
                       % {"name": s["name"], "size": size, "diameter": s["diameter_mm"]})
        else:
            out.append(_("%(name)s: %(size)s.") % {"name": s["name"], "size": size})
    return out


def uncertainty_statement(uncertainty: float, flag: float | None, low_confidence: bool, *, _: Gettext) -> str:
    """Whether the prediction's uncertainty lies within what the model showed on its validation data."""
    if low_confidence and flag is not None:
        return (_("The uncertainty (%(value).3f) is above the flag fitted on the validation data (%(flag).3f): "
                  "this result is uncertain and needs a careful review.") % {"value": uncertainty, "flag": flag})
    if low_confidence:
        return _("The result is flagged as low confidence (the input is unlike the training data or the "
                 "uncertainty is high): it needs a careful review.")
    if flag is not None:
        return (_("The uncertainty (%(value).3f) is within the range seen on the validation data (flag at "
                  "%(flag).3f).") % {"value": uncertainty, "flag": flag})
    return _("The uncertainty is %(value).3f; the model has no validated flag for it.") % {"value": uncertainty}


def classification_findings(label: str, probability: float, threshold: Mapping[str, Any] | None,
                            uncertainty: str, *, _: Gettext) -> list[str]:
    """The decision with its calibrated probability, the operating threshold, the uncertainty statement."""
    out = [_("The model classifies the image as %(label)s (calibrated probability %(p).1f%%).")
           % {"label": label, "p": 100 * probability}]
    if threshold and threshold.get("class") is not None:
        out.append(_("It calls %(cls)s when that probability reaches %(t).3f (operating point chosen on the "
                     "validation data).") % {"cls": threshold["class"], "t": threshold["threshold"]})
    out.append(uncertainty)
    return out


def detection_findings(counts: Mapping[str, int], min_score: float, *, _: Gettext) -> list[str]:
    """How many detections of each class reach the reporting score."""
    total = sum(counts.values())
    if not total:
        return [_("No detection reaches the score %(s).2f.") % {"s": min_score}]
    parts = _(", ").join(f"{name} {n}" for name, n in counts.items() if n)
    return [_("%(n)d detections reach the score %(s).2f: %(parts)s.") % {"n": total, "s": min_score, "parts": parts}]


def registration_findings(summary: Mapping[str, Any], *, _: Gettext) -> list[str]:
    """The method and the similarity before and after alignment."""
    method = summary.get("method") or _("not stated")
    out = [_("The moving image was aligned to the fixed image (%(method)s).") % {"method": method}]
    if summary.get("metric_before") is not None and summary.get("metric_after") is not None:
        metric = str(summary.get("metric", "")).upper()
        sign = -1.0 if summary.get("metric") == "mse" else 1.0
        out.append(_("%(metric)s changed from %(before).4g to %(after).4g.")
                   % {"metric": metric, "before": sign * summary["metric_before"],
                      "after": sign * summary["metric_after"]})
    return out


def common_findings(quality_status: str | None, warnings: Sequence[str], *, _: Gettext) -> list[str]:
    """Image quality, inputs unlike the training data, and the review every result needs."""
    out = []
    if quality_status in ("warn", "fail"):
        out.append(_("Image quality checks raised flags (%(status)s): see the image-quality table.")
                   % {"status": status_text(quality_status, _=_)})
    if warnings:
        out.append(_("The input differs from the training data: %(why)s.") % {"why": "; ".join(warnings)})
    out.append(_("These are automatic results of a research model: a clinician must review them."))
    return out
