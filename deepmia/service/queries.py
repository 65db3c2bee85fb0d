"""Catalog reads of the service, as SQLAlchemy expressions only (filter values are bound parameters)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from deepmia.data.catalog import Catalog
from deepmia.data.catalog.models import Instance, Patient, Series, Study

from . import schemas
from .settings import Settings

__all__ = ["SORTS", "available_models", "model_info", "series_of", "studies_of", "study_page"]

SORTS = {"date": Study.study_date, "id": Study.id, "description": Study.description, "patient": Patient.pseudonym,
         "uid": Study.study_uid}


def series_of(catalog: Catalog, *, study_ids: list[int] | None = None,
              series_ids: list[int] | None = None) -> list[schemas.Series]:
    """The series of some studies (or the given series), with their present image counts and matrix size."""
    query = select(Series).order_by(Series.study_id, Series.series_number, Series.id)
    if study_ids is not None:
        query = query.where(Series.study_id.in_(study_ids))
    if series_ids is not None:
        query = query.where(Series.id.in_(series_ids))
    with catalog.session() as s:
        rows = list(s.scalars(query))
        stats = {r[0]: r[1:] for r in s.execute(
            select(Instance.series_id, func.count(Instance.id), func.max(Instance.rows), func.max(Instance.columns))
            .where(Instance.series_id.in_([r.id for r in rows]), Instance.missing_since.is_(None))
            .group_by(Instance.series_id))}
    return [schemas.Series(id=r.id, series_uid=r.series_uid, study_id=r.study_id, modality=r.modality,
                           description=r.description, number=r.series_number,
                           n_instances=stats.get(r.id, (0, None, None))[0], rows=stats.get(r.id, (0, None, None))[1],
                           columns=stats.get(r.id, (0, None, None))[2]) for r in rows]


def studies_of(catalog: Catalog, rows: list[tuple[Study, str]]) -> list[schemas.Study]:
    """API studies from ``(study, pseudonym)`` rows, with their modalities and series counts."""
    ids = [study.id for study, _ in rows]
    with catalog.session() as s:
        mods: dict[int, list[str]] = {}
        counts: dict[int, int] = {}
        for study_id, modality, n in s.execute(select(Series.study_id, Series.modality, func.count(Series.id))
                                                .where(Series.study_id.in_(ids))
                                                .group_by(Series.study_id, Series.modality)):
            counts[study_id] = counts.get(study_id, 0) + n
            if modality:
                mods.setdefault(study_id, []).append(modality)
    return [schemas.Study(id=st.id, study_uid=st.study_uid, patient_id=pseudonym, study_date=st.study_date,
                          modality="/".join(sorted(mods.get(st.id, []))) or None, description=st.description,
                          n_series=counts.get(st.id, 0)) for st, pseudonym in rows]


def study_page(catalog: Catalog, *, page: int, size: int, sort: str, patient: str | None, modality: str | None,
               q: str | None) -> schemas.StudyPage:
    """One page of the worklist, sorted and filtered (``q`` searches description, study UID and patient)."""
    query = select(Study, Patient.pseudonym).join(Patient, Patient.id == Study.patient_id)
    if patient:
        query = query.where(Patient.pseudonym.startswith(patient, autoescape=True))
    if modality:
        query = query.where(Study.id.in_(select(Series.study_id).where(Series.modality == modality)))
    if q:
        needle = q.lower()
        query = query.where(or_(func.lower(Study.description).contains(needle, autoescape=True),
                                Study.study_uid.contains(q, autoescape=True),
                                Patient.pseudonym.startswith(needle, autoescape=True)))
    column = SORTS[sort.lstrip("-")]
    order = column.desc() if sort.startswith("-") else column.asc()
    with catalog.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery()))
        rows = s.execute(query.order_by(order, Study.id).offset((page - 1) * size).limit(size)).all()
    return schemas.StudyPage(items=studies_of(catalog, [(r[0], r[1]) for r in rows]), total=total, page=page,
                             size=size)


def available_models(settings: Settings) -> dict[str, Path]:
    """Models the service runs, by name: the shipped ones, then those in ``--models`` (same name: theirs)."""
    from deepmia.tasks import shipped_models

    found = {p.name: p for p in shipped_models()}
    if settings.models_dir is not None and Path(settings.models_dir).is_dir():
        for p in sorted(Path(settings.models_dir).iterdir()):
            if (p / "plan.json").is_file():
                found[p.name] = p
    return found


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def model_info(name: str, path: Path) -> schemas.ModelInfo:
    """A model's card (README.md), plan and metrics."""
    plan = _json(path / "plan.json")
    card = path / "README.md"
    metrics = _json(path / "metrics.json")
    return schemas.ModelInfo(name=name, task=plan.get("task") if isinstance(plan, dict) else None,
                             card_markdown=card.read_text(encoding="utf-8") if card.is_file() else None,
                             plan=plan if isinstance(plan, dict) else None,
                             metrics=metrics if isinstance(metrics, dict | list) else None)
