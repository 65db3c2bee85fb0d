"""DICOM de-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

Two maintained libraries do the work, and this module fills what neither does (see ``docs/deid.md``):

1. ``dicognito`` pseudonymises consistently: every instance UID is remapped (class and transfer syntax UIDs are
   kept), person names, patient/accession/study ids, addresses and institutions are replaced by dummies, and all
   dates and date-times are shifted back by one offset (62 to 730 days). With a ``key`` the mapping and the offset
   are a pure function of the key, so a study split over several runs still groups and lines up; without one they
   are random (consistent within one :class:`Deidentifier`).
2. Table E.1-1 of PS3.15 (as shipped by ``dicom-anonymizer``, edition 2026c) is then applied to every attribute
   dicognito left alone: X removes, Z empties, D replaces with a dummy, U is done by dicognito. Where the table
   allows a choice we keep dicognito's pseudonym, remove otherwise. Dates and times dicognito shifted are kept
   shifted (the *Retain Longitudinal Temporal Information with Modified Dates* option); birth date and time are
   emptied.
3. Private attributes, curve data (50xx) and overlay planes (60xx) are removed.
4. ``PatientIdentityRemoved``, ``DeidentificationMethod``, ``DeidentificationMethodCodeSequence`` (DCM 113100
   Basic Application Confidentiality Profile, 113107 Retain Longitudinal Temporal Information Modified Dates
   Option) and ``LongitudinalTemporalInformationModified`` are set.

Pixel data is never changed, so text burned into the pixels survives. Such files are *flagged*, not passed
silently: when ``BurnedInAnnotation`` is YES, or when it is absent and the modality or storage class often carries
burned-in text (ultrasound, secondary capture, angiography, endoscopy and other visible light, ...). A flagged file
gets ``PatientIdentityRemoved = NO`` and is listed in the report; its pixels need review or cleaning.

Example:
    >>> from deepmia.deid import deidentify_tree     # doctest: +SKIP
    >>> report = deidentify_tree("raw/", "deid/", key="project secret")  # doctest: +SKIP
    >>> report.write("deid-report.json")              # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from deepmia.errors import InvalidArgumentError, MissingDependencyError, ReadError, WriteError

__all__ = [
    "Deidentifier",
    "FileOutcome",
    "DeidReport",
    "burned_in_risk",
    "deidentify_tree",
    "check_paths",
    "list_inputs",
    "PROFILE",
]

#: How this module describes itself in ``DeidentificationMethod``.
PROFILE = (
    "PS3.15 E.1-1 Basic Application Confidentiality Profile, Retain Longitudinal Temporal Information "
    "Modified Dates Option (deepmia, dicognito)"
)
#: The ``DeidentificationMethod`` value written (an LO: at most 64 characters).
METHOD = "deepmia basic profile + modified dates (dicognito 0.19)"
_TABLE_EDITION = "dicomfields_2026c"
_SHIFT_DAYS = (62, 730)

_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)

# Attributes dicognito replaces besides every PN, UI, DA and DT (its IDAnonymizer, address and equipment lists).
_DICOGNITO_REPLACED = frozenset({
    "AccessionNumber", "OtherPatientIDs", "FillerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequestRetired", "FillerOrderNumberProcedure", "PatientID",
    "PerformedProcedureStepID", "PlacerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequestRetired", "PlacerOrderNumberProcedure", "RequestedProcedureID",
    "ScheduledProcedureStepID", "StationName", "StudyID", "PatientAddress", "RegionOfResidence",
    "CountryOfResidence", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
})
# Patient characteristics that a date shift would keep exact (age): emptied, not shifted.
_EMPTIED_DATES = frozenset({"PatientBirthDate", "PatientBirthTime"})

# Modalities and storage classes whose pixels often carry burned-in text when BurnedInAnnotation is absent.
_RISKY_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "GM", "SM", "DOC", "ECG", "OP"})
_RISKY_SOP_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.6.": "ultrasound",
    "1.2.840.10008.5.1.4.1.1.3.": "ultrasound multi-frame (retired)",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.12.": "X-ray angiography / fluoroscopy",
    "1.2.840.10008.5.1.4.1.1.77.": "visible light (endoscopy, photography, microscopy)",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
}

Status = Literal["deidentified", "not_dicom", "failed"]


def _need(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"de-identification needs the {package!r} package", fix=f"pip install {package}"
        ) from exc


@lru_cache(maxsize=1)
def _table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """PS3.15 Table E.1-1 as ``{tag: action}`` plus masked (repeating group) entries."""
    selector = _need("dicomanonymizer.dicomfields_selector", "dicom-anonymizer")
    db = selector.dicom_anonymization_database_selector(_TABLE_EDITION)
    actions: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, tags in db.items():
        if category == "ALL_TAGS":
            continue
        action = category.removesuffix("_TAGS").replace("_STAR", "")  # e.g. "X_Z_D" -> choices X, Z, D
        for tag in tags:
            if len(tag) == 2:
                actions[(tag[0] << 16) | tag[1]] = action
            else:
                masked.append((tag[0], tag[1], tag[2], tag[3], action))
    return actions, tuple(masked)


def _action_for(tag: int) -> str | None:
    actions, masked = _table()
    if tag in actions:
        return actions[tag]
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gmask, emask, action in masked:
        if group & gmask == g and element & emask == e:
            return action
    return None


def burned_in_risk(ds: Any) -> str | None:
    """Why ``ds``'s pixels may hold burned-in identifying text, or None when they are not at risk.

    ``BurnedInAnnotation`` decides when present; when absent, the modality and the storage class do.
    """
    flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag == "NO" or "PixelData" not in ds and "FloatPixelData" not in ds and "EncapsulatedDocument" not in ds:
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in _RISKY_MODALITIES:
        return f"BurnedInAnnotation absent and modality {modality} often carries burned-in text"
    sop = str(ds.get("SOPClassUID", "") or "")
    for prefix, name in _RISKY_SOP_PREFIXES.items():
        if sop.startswith(prefix):
            return f"BurnedInAnnotation absent and the storage class ({name}) often carries burned-in text"
    return None


def _dummy(vr: str) -> Any:
    if vr in ("IS", "DS"):
        return "0"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"\x00\x00"
    return "ANONYMIZED"[: 16 if vr in ("SH", "CS", "AE") else 64]


class Deidentifier:
    """Applies the basic profile to pydicom datasets, consistently across all datasets it sees.

    Args:
        key: Secret that makes the pseudonyms and the date shift reproducible: the same key gives the same
            pseudonymous ids, UIDs and dates in every run; a different key different ones. Without a key they are
            random (still consistent within this object). Keep the key secret: with it, pseudonyms of guessed
            values can be recomputed.
    """

    def __init__(self, *, key: str | None = None) -> None:
        if key is not None and not str(key):
            raise InvalidArgumentError("key must not be empty", fix="pass a secret string, or no key")
        dicognito = _need("dicognito.anonymizer", "dicognito")
        from dicognito.datetimeanonymizer import DateTimeAnonymizer
        from dicognito.randomizer import Randomizer

        _table()
        self._anonymizer = dicognito.Anonymizer(seed=key)
        # dicognito shifts by a number of hours, so a date's shift depends on its time of day; shift whole days
        # instead (the same for every date of a study), derived from the key like dicognito's other values.
        lo, hi = _SHIFT_DAYS
        days = Randomizer(key).to_int("date_offset_days") % (hi - lo) + lo
        self._anonymizer.add_element_handler(DateTimeAnonymizer(-24 * days))

    def __call__(self, ds: Any) -> str | None:
        """De-identify ``ds`` in place; returns the burned-in annotation risk (see :func:`burned_in_risk`)."""
        risk = burned_in_risk(ds)
        self._anonymizer.anonymize(ds)
        ds.walk(self._apply_table)
        ds.remove_private_tags()
        for tag in [t for t in ds.keys() if 0x5000 <= t.group <= 0x50FF or 0x6000 <= t.group <= 0x60FF]:
            del ds[tag]  # curves and overlay planes (their data is X in Table E.1-1; drop the whole plane)
        self._mark(ds, risk)
        return risk

    @staticmethod
    def _pseudonymised(dataset: Any, element: Any) -> bool:
        """Whether dicognito already replaced this element with a pseudonym or shifted value."""
        vr = element.VR
        if vr in ("PN", "UI", "DA", "DT"):
            return True
        keyword = element.keyword
        if vr == "TM":  # dicognito shifts a time together with its date only
            return keyword.replace("Time", "Date") in dataset
        return keyword in _DICOGNITO_REPLACED

    def _apply_table(self, dataset: Any, element: Any) -> None:
        if element.tag.is_private:
            return  # removed afterwards, together with their creators
        action = _action_for(int(element.tag))
        if action is None:
            return  # not in Table E.1-1: kept
        choices = set(action.split("_"))
        if element.VR == "SQ":  # kept sequences have their items processed one by one
            if not choices & {"D", "U"}:
                if "X" in choices:
                    del dataset[element.tag]
                else:
                    element.value = []
            return
        done = self._pseudonymised(dataset, element)
        if element.keyword in _EMPTIED_DATES:
            element.value = ""
        elif done and element.VR in ("DA", "DT", "TM"):
            return  # shifted: Retain Longitudinal Temporal Information with Modified Dates
        elif done and choices & {"D", "U", "Z"}:
            return  # dicognito's pseudonym is a permitted dummy value
        elif "X" in choices:
            del dataset[element.tag]
        elif "Z" in choices:
            element.value = b"" if element.VR in ("OB", "OW", "UN") else ""
        elif "D" in choices:
            element.value = _dummy(element.VR)

    @staticmethod
    def _mark(ds: Any, risk: str | None) -> None:
        from pydicom import Dataset
        from pydicom.sequence import Sequence

        ds.PatientIdentityRemoved = "NO" if risk else "YES"
        ds.DeidentificationMethod = METHOD
        items = []
        for value, meaning in _CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"


# ----------------------------------------------------------------------------------------------- files
@dataclass
class FileOutcome:
    """What happened to one input file."""

    source: str
    output: str | None
    status: Status
    burned_in_risk: str | None = None
    message: str | None = None


@dataclass
class DeidReport:
    """The outcome of a de-identification run, one entry per input file."""

    input: str
    output: str
    profile: str = PROFILE
    keyed: bool = False
    files: list[FileOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of files per status, plus ``burned_in_flagged``."""
        out = {"deidentified": 0, "not_dicom": 0, "failed": 0}
        for f in self.files:
            out[f.status] += 1
        out["burned_in_flagged"] = sum(1 for f in self.files if f.burned_in_risk)
        return out

    def flagged(self) -> list[FileOutcome]:
        """Files written whose pixels may hold burned-in identifying text."""
        return [f for f in self.files if f.burned_in_risk]

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to JSON."""
        return {
            "input": self.input, "output": self.output, "profile": self.profile, "keyed": self.keyed,
            "counts": self.counts(), "files": [asdict(f) for f in self.files],
        }

    def write(self, path: str | PathLike[str]) -> Path:
        """Write the report as JSON, or as CSV when ``path`` ends in ``.csv``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            if p.suffix.lower() == ".csv":
                with open(p, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(FileOutcome.__dataclass_fields__))
                    writer.writeheader()
                    writer.writerows(asdict(o) for o in self.files)
            else:
                p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise WriteError(f"could not write the report: {exc.strerror or exc}", path=p) from exc
        return p


def _read_dicom(path: Path) -> Any | None:
    """The dataset in ``path``, or None when it is not DICOM (files without a preamble are accepted)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:  # noqa: BLE001 - force-reading a non-DICOM file raises many types
        return None
    return ds if "SOPClassUID" in ds else None


def _save(ds: Any, path: Path) -> str | None:
    """Write ``ds`` as a DICOM Part 10 file; returns a note when something had to be added."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
    note = None
    if "SOPClassUID" not in ds:
        if "MediaStorageSOPClassUID" not in meta:
            raise ValueError("the file has no SOP Class UID")
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = generate_uid()
        note = "the file had no SOPInstanceUID; a new random one was written"
    if "TransferSyntaxUID" not in meta:  # a file without a Part 10 header: record how it was encoded
        implicit = ds.original_encoding[0] if ds.original_encoding else False
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return note


def _process(deid: Deidentifier, path: Path, out: Path, rel: str) -> FileOutcome:
    ds = _read_dicom(path)
    if ds is None:
        return FileOutcome(rel, None, "not_dicom", message="not a DICOM file; not copied")
    try:
        risk = deid(ds)
        note = _save(ds, out)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a tree; it is reported
        return FileOutcome(rel, None, "failed", message=f"{type(exc).__name__}: {exc}".splitlines()[0])
    return FileOutcome(rel, str(out), "deidentified", burned_in_risk=risk, message=note)


def list_inputs(src: Path) -> list[Path]:
    """The files to process: ``src`` itself, or every file under it, sorted."""
    if src.is_file():
        return [src]
    return sorted(p for p in src.rglob("*") if p.is_file())


def check_paths(src: Path, dst: Path) -> None:
    """Refuse a missing input, an output inside the input, and an output that already holds data.

    Raises:
        ReadError: ``src`` does not exist.
        InvalidArgumentError: ``dst`` is ``src`` or inside it.
        WriteError: ``dst`` is a non-empty folder or an existing file.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ReadError("no such file or folder", path=src)
    s, d = src.resolve(), dst.resolve()
    if d == s or s.is_dir() and s in d.parents:
        raise InvalidArgumentError("the output is inside the input", path=dst, fix="choose an output outside the input")
    if dst.is_dir() and src.is_dir() and any(dst.iterdir()):
        raise WriteError("output folder is not empty", path=dst, fix="choose a new or empty folder")
    if dst.is_file():
        raise WriteError("output already exists", path=dst, fix="choose a new path")


def deidentify_tree(
    src: str | PathLike[str],
    dst: str | PathLike[str],
    *,
    key: str | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    files: Iterable[Path] | None = None,
) -> DeidReport:
    """De-identify a DICOM file, or every DICOM file under a folder, into ``dst`` (mirroring the tree).

    Non-DICOM files are not copied; files that cannot be de-identified are not written. Both are listed in the
    report, so nothing is lost silently.

    Args:
        src: A DICOM file or a folder tree.
        dst: Output: a folder (mirrors ``src``) when ``src`` is a folder; for a file, the output file, or an
            existing folder to write it into under the same name.
        key: Secret making pseudonyms and date shifts reproducible across runs (see :class:`Deidentifier`).
        on_file: Called after each file (e.g. to advance a progress bar).
        files: The files under ``src`` to process (default: all of them); for callers that listed them already.

    Returns:
        The report (write it with :meth:`DeidReport.write`).

    Raises:
        ReadError: ``src`` does not exist.
        InvalidArgumentError: ``dst`` is inside ``src``.
        WriteError: ``dst`` is not empty, or a file could not be written.
    """
    source, target = Path(src), Path(dst)
    check_paths(source, target)
    deid = Deidentifier(key=key)
    report = DeidReport(input=str(source), output=str(target), keyed=key is not None)
    single = source.is_file()
    for path in list_inputs(source) if files is None else files:
        rel = Path(path.name) if single else path.relative_to(source)
        out = (target / path.name if target.is_dir() else target) if single else target / rel
        with warnings.catch_warnings(record=True) as caught:  # pydicom's complaints about the input: reported
            warnings.simplefilter("always")
            outcome = _process(deid, path, out, str(rel))
        notes = [outcome.message] if outcome.message else []
        notes += sorted({str(w.message).splitlines()[0] for w in caught})
        outcome.message = "; ".join(notes) or None
        report.files.append(outcome)
        if on_file is not None:
            on_file(outcome)
    return report
