"""The source series a DICOM SEG or SR references: the DICOM series an input was read from, or one made for it.

A SEG or SR lives in a patient's study and references the images it was computed on. An input read from DICOM has
them. A NIfTI, PNG or JPEG input has neither patient nor study nor instances, so the user states the patient
(:class:`DicomIdentity`: a patient id, optionally a study UID, or a template DICOM file whose patient and study are
taken) and :func:`made_source` writes the input itself as a DICOM series with deepmia's own DICOM writer
(:func:`deepmia.io.dicom.writer.write_series`: CT or MR Image Storage when the modality says so, otherwise
Secondary Capture; RGB pictures as RGB Secondary Capture) into ``OUT/dicom/<name>.source/``, in that patient's
study, on a new Frame of Reference. The SEG and SR then reference that series, which goes to the PACS with them.

Example:
    >>> identity = DicomIdentity(patient_id="ANON-001")
    >>> identity.given
    True
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError, SeriesError

__all__ = ["DicomIdentity", "source_datasets", "made_source", "check_dicom_inputs", "MISSING_IDENTITY_FIX"]

MISSING_IDENTITY_FIX = ("give --patient-id ID (and optionally --study-uid UID) or --template FILE.dcm to write it "
                        "into that patient's study, or predict on the DICOM series")
#: Patient and study attributes a template file gives the series made for a non-DICOM input.
_FROM_TEMPLATE = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                  "PatientIdentityRemoved", "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription")


@dataclass(frozen=True)
class DicomIdentity:
    """Who and which study the DICOM objects of a non-DICOM input belong to.

    Attributes:
        patient_id: The patient's id (``PatientID``).
        study_uid: The study (``StudyInstanceUID``); one new study per run when not given.
        template: A DICOM file whose patient and study attributes are copied (``patient_id`` / ``study_uid``,
            when also given, take precedence).
    """

    patient_id: str | None = None
    study_uid: str | None = None
    template: str | None = None

    @property
    def given(self) -> bool:
        """Whether a patient was stated (a patient id or a template)."""
        return bool(self.patient_id or self.template)

    def resolved(self) -> DicomIdentity:
        """This identity checked, with a study UID fixed for the whole run (so every input lands in one study).

        Raises:
            InvalidArgumentError: A study UID without a patient, an invalid UID, or a template that is not DICOM.
        """
        from pydicom.uid import generate_uid

        if self.study_uid and not self.given:
            raise InvalidArgumentError("--study-uid needs --patient-id or --template (whose patient is it?)",
                                       fix="add --patient-id ID or --template FILE.dcm")
        if self.study_uid and not (len(self.study_uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+",
                                                                             self.study_uid)):
            raise InvalidArgumentError(f"--study-uid {self.study_uid!r} is not a valid DICOM UID",
                                       fix="digits and dots, at most 64 characters (e.g. 1.2.826.0.1.3680043...)")
        template = self.template_dataset()
        study = self.study_uid or (template.get("StudyInstanceUID") if template is not None else None)
        return replace(self, study_uid=str(study or generate_uid()))

    def template_dataset(self) -> Any:
        """The template file's header, or None.

        Raises:
            InvalidArgumentError: The template is missing or not a DICOM file.
        """
        if not self.template:
            return None
        import pydicom
        from pydicom.errors import InvalidDicomError

        path = Path(self.template)
        if not path.is_file():
            raise InvalidArgumentError("no such template file", path=path, fix="give a DICOM file of the patient")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise InvalidArgumentError(f"the template is not a DICOM file ({exc})", path=path,
                                       fix="give a DICOM file of the patient's study") from None

    def reference(self) -> Any:
        """A header of only the patient and study attributes (what the made series copies), with this study.

        Without a template the patient name is left empty (Type 2) and the study is dated now.
        """
        import pydicom

        ds = pydicom.Dataset()
        template = self.template_dataset()
        if template is not None:
            for keyword in _FROM_TEMPLATE:
                if keyword in template:
                    ds[keyword] = template[keyword]
        if self.patient_id:
            ds.PatientID = self.patient_id
        if self.study_uid:
            ds.StudyInstanceUID = self.study_uid
        if "StudyDate" not in ds:  # a new study: today (a PACS files studies by date)
            now = datetime.datetime.now()
            ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        return ds


def source_datasets(meta: Mapping[str, Any]) -> list[Any]:
    """The source series' datasets (headers, no pixels) of an image read from DICOM.

    Uses ``meta["source_files"]`` (the series' files, set by the batch loop) when present, else lists the series
    ``meta["series_uid"]`` in ``meta["source"]`` (the folder the series was read from, or the DICOM file).

    Raises:
        InvalidArgumentError: The image was not read from a DICOM series.
        SeriesError: The series is no longer in its folder.
    """
    import pydicom

    from deepmia.io.dicom.series import list_series

    source, uid = meta.get("source"), meta.get("series_uid")
    if meta.get("format") != "dicom" or not source or not uid:
        raise InvalidArgumentError(
            "DICOM outputs need a DICOM source series; this input was not read from one",
            path=source or meta.get("case_id"), fix=MISSING_IDENTITY_FIX)
    files = [Path(f) for f in meta.get("source_files") or ()]
    if not files or not all(f.is_file() for f in files):
        found = [s for s in list_series(source, recursive=True) if s.series_uid == uid]
        if not found:
            raise SeriesError(f"the source series {uid} is no longer in the folder", path=source)
        files = list(found[0].files)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in files]


def made_source(image: Any, identity: DicomIdentity, folder: str | os.PathLike[str]) -> list[Any]:
    """Write ``image`` (a non-DICOM input) as a DICOM series into ``folder``; returns its datasets (headers).

    The series is in the patient and study of ``identity`` (resolve it once per run: see
    :meth:`DicomIdentity.resolved`), on a new Frame of Reference; a multi-channel image that is not an 8-bit RGB
    picture is written as its first channel. ``folder`` is replaced if it exists.

    Raises:
        InvalidArgumentError: No patient was stated.
        WriteError: The image cannot be stored as DICOM (see :func:`deepmia.io.dicom.writer.write_series`).
    """
    import shutil

    import numpy as np
    import pydicom

    from deepmia.io.dicom.writer import write_series

    if not identity.given:
        raise InvalidArgumentError("DICOM outputs of a non-DICOM input need the patient they belong to",
                                   path=image.meta.get("source") or image.meta.get("case_id"), fix=MISSING_IDENTITY_FIX)
    folder = Path(folder)
    if folder.is_dir():
        shutil.rmtree(folder)
    rgb = image.num_channels == 3 and image.array.dtype == np.uint8
    if image.num_channels != 1 and not rgb:
        image = image.with_array(image.array[:1])
    name = str(image.meta.get("case_id") or folder.name)
    files = write_series(image, folder, reference=identity.reference(), series_number=900,
                         series_description=f"deepmia source {name}"[:64])
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in files]


def check_dicom_inputs(src: str | os.PathLike[str], identity: DicomIdentity) -> None:
    """Refuse, before predicting, ``--dicom`` on inputs that are not DICOM when no patient was stated.

    Raises:
        InvalidArgumentError: Names the first non-DICOM input and says what to add.
    """
    from deepmia.engine.batch import discover_inputs
    from deepmia.io import format_of

    if identity.given:
        return
    items, _ = discover_inputs(src)
    for item in items:
        if not item.is_series and format_of(item.path) != "dicom":
            raise InvalidArgumentError("DICOM outputs need a DICOM source series, and this input is not DICOM",
                                       path=item.path, fix=MISSING_IDENTITY_FIX)

