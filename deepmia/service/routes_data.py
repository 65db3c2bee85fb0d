"""Data endpoints: uploads, the worklist, studies, series (as NIfTI and as their original files), models."""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlalchemy import select

from deepmia.data.catalog.models import Instance, Patient, Series, Study

from . import schemas
from .accounts import Principal, audit
from .preview import preview_of, write_viewer_nifti
from .queries import available_models, model_info, series_of, studies_of, study_page
from .security import require
from .uploads import ingest, stage

__all__ = ["Id", "Text", "router"]

router = APIRouter(prefix="/api", responses=schemas.ERRORS)
Id = Annotated[int, PathParam(ge=1, le=2**62)]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Annotator = Annotated[Principal, Depends(require("annotator"))]


def _catalog(request: Request):
    return request.app.state.catalog


@router.post("/uploads", response_model=schemas.UploadResult, tags=["data"],
             responses={413: {"description": "upload or zip over the limits"}})
def upload(request: Request, who: Annotator, files: Annotated[list[UploadFile], File()],
           deid: bool = False) -> schemas.UploadResult:
    """Store uploaded DICOM files, a zip of them, or NIfTI/NRRD/MHA/PNG/JPEG/TIFF images (annotator or admin).

    With ``deid=true`` DICOM files are de-identified with ``deepmia deid``'s profile before they are stored.
    """
    settings = request.app.state.settings
    staged = stage([(f.filename or "file", f.file) for f in files], settings)
    ids, skipped = ingest(_catalog(request), staged, settings, deid=deid)
    series = series_of(_catalog(request), series_ids=ids)
    study_ids = sorted({s.study_id for s in series})
    with _catalog(request).session() as s:
        rows = s.execute(select(Study, Patient.pseudonym).join(Patient, Patient.id == Study.patient_id)
                         .where(Study.id.in_(study_ids)).order_by(Study.id)).all()
    studies = studies_of(_catalog(request), [(r[0], r[1]) for r in rows])
    audit(_catalog(request), who.user, "upload", f"studies {study_ids}",
          f"{len(files)} file(s), {len(ids)} series, deid={deid}")
    return schemas.UploadResult(studies=studies, series=series, skipped=skipped)


@router.get("/studies", response_model=schemas.StudyPage, tags=["data"])
def studies(request: Request, who: Viewer, page: Annotated[int, Query(ge=1, le=10**6)] = 1,
            size: Annotated[int, Query(ge=1, le=500)] = 50,
            sort: Annotated[str, Query(pattern=r"^-?(date|id|description|patient|uid)$")] = "-date",
            patient: Text = None, modality: Text = None, q: Text = None) -> schemas.StudyPage:
    """The worklist: studies, paged, sorted (``-`` for descending) and filtered."""
    return study_page(_catalog(request), page=page, size=size, sort=sort, patient=patient, modality=modality, q=q)


def _study_row(request: Request, study_id: int) -> tuple[Study, str]:
    with _catalog(request).session() as s:
        row = s.execute(select(Study, Patient.pseudonym).join(Patient, Patient.id == Study.patient_id)
                        .where(Study.id == study_id)).first()
    if row is None:
        raise HTTPException(status_code=404, detail=f"no study {study_id}")
    return row[0], row[1]


@router.get("/studies/{study_id}", response_model=schemas.StudyDetail, tags=["data"])
def study(request: Request, who: Viewer, study_id: Id) -> schemas.StudyDetail:
    """A study with its series."""
    row = _study_row(request, study_id)
    base = studies_of(_catalog(request), [row])[0]
    audit(_catalog(request), who.user, "view", f"study {study_id}")
    return schemas.StudyDetail(**base.model_dump(), series=series_of(_catalog(request), study_ids=[study_id]))


def _series_files(request: Request, series_id: int) -> tuple[list[Path], bool, str]:
    """Present files of a series, whether DICOM, and a key that changes when they change."""
    with _catalog(request).session() as s:
        if s.get(Series, series_id) is None:
            raise HTTPException(status_code=404, detail=f"no series {series_id}")
        rows = s.execute(select(Instance.path, Instance.sop_class_uid, Instance.size, Instance.mtime_ns)
                         .where(Instance.series_id == series_id, Instance.missing_since.is_(None))
                         .order_by(Instance.instance_number, Instance.id)).all()
    if not rows:
        raise HTTPException(status_code=404, detail=f"series {series_id} has no stored image")
    key = hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest()[:16]
    return [Path(r[0]) for r in rows], all(r[1] is not None for r in rows), key


@router.get("/series/{series_id}/image", tags=["data"], response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the series as .nii.gz"}})
def series_image(request: Request, who: Viewer, series_id: Id,
                 format: Literal["nifti"] = "nifti",  # noqa: A002 - the API's parameter name
                 preview: bool = False) -> FileResponse:
    """The series as one NIfTI volume (``.nii.gz``) in its world geometry: what the viewer loads.

    With ``preview=true`` a volume of more than 4 M voxels comes block-averaged to at most that many (the viewer
    draws it while the full volume loads); the ``X-Deepmia-Preview`` header gives the shrink factors per axis
    (``4x4x2``), or ``none`` when the full volume itself was sent.
    """
    files, dicom, key = _series_files(request, series_id)
    cache = Path(request.app.state.settings.data_dir) / "cache"
    target = cache / f"series-{series_id}-{key}.nii.gz"
    if not dicom and files[0].name.endswith(".nii.gz"):
        target = files[0]  # an uploaded NIfTI is served as stored: no conversion on the first open
    elif not target.is_file():
        from deepmia.jobs.kinds import read_files

        cache.mkdir(parents=True, exist_ok=True)
        write_viewer_nifti(read_files(files, dicom), target)
    headers = {}
    if preview:
        cache.mkdir(parents=True, exist_ok=True)
        try:
            target, factors = preview_of(target, cache / f"series-{series_id}-{key}-preview.nii.gz")
        except RuntimeError:  # a file SimpleITK cannot shrink (the viewer then loads it whole): no preview
            factors = None
        headers["X-Deepmia-Preview"] = "x".join(map(str, factors)) if factors else "none"
    audit(_catalog(request), who.user, "view", f"series {series_id}", "image nifti" + (" preview" if preview else ""))
    return FileResponse(target, media_type="application/octet-stream", filename=f"series_{series_id}.nii.gz",
                        headers=headers)


@router.get("/series/{series_id}/original", tags=["data"], response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "zip of the stored files"}})
def series_original(request: Request, who: Annotator, series_id: Id, tasks: BackgroundTasks) -> FileResponse:
    """A zip of the series' stored original files (annotator or admin)."""
    files, _, _ = _series_files(request, series_id)
    tmp_dir = Path(request.app.state.settings.data_dir) / "cache"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".zip", dir=tmp_dir)
    os.close(handle)
    with zipfile.ZipFile(name, "w", zipfile.ZIP_STORED) as archive:
        for i, path in enumerate(files):
            archive.write(path, f"{i + 1:06d}_{path.name}")
    tasks.add_task(os.unlink, name)
    audit(_catalog(request), who.user, "download", f"series {series_id}", "original")
    return FileResponse(name, media_type="application/zip", filename=f"series_{series_id}.zip")


@router.get("/models", response_model=list[schemas.ModelInfo], tags=["models"])
def models(request: Request, who: Viewer) -> list[schemas.ModelInfo]:
    """The models the service runs, with their cards, plans and metrics."""
    return [model_info(n, p) for n, p in available_models(request.app.state.settings).items()]


@router.get("/models/{name}", response_model=schemas.ModelInfo, tags=["models"])
def model(request: Request, who: Viewer, name: str) -> schemas.ModelInfo:
    """One model, by name (one of those ``GET /api/models`` lists)."""
    found = available_models(request.app.state.settings)
    if name not in found:
        raise HTTPException(status_code=404, detail="no model of that name")
    return model_info(name, found[name])

