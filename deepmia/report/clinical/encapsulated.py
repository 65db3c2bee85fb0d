"""The report as a DICOM Encapsulated PDF (PS3.3 A.45.1) in the source study, as a new series.

highdicom has no Encapsulated PDF class, so the instance is built with pydicom module by module: Patient and
General Study copied from the source, Encapsulated Document Series (modality ``DOC``, a new series), General and
SC Equipment, Encapsulated Document (the PDF, its MIME type and length, the source instances it was derived
from) and SOP Common. ``dciodvfy`` checks it in the tests.

Example:
    >>> from deepmia.report.clinical.encapsulated import ENCAPSULATED_PDF
    >>> ENCAPSULATED_PDF
    '1.2.840.10008.5.1.4.1.1.104.1'
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError, SeriesError

__all__ = ["ENCAPSULATED_PDF", "REPORT_SERIES_OFFSET", "encapsulated_pdf", "report_dicom"]

#: SOP Class UID of the Encapsulated PDF Storage.
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
#: Series number of the report: the source's plus this (SEG +1000 and SR +2000, see deepmia.report.dicom).
REPORT_SERIES_OFFSET = 3000
_PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
_STUDY = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _series_number(source: Any) -> int:
    try:
        return int(source.get("SeriesNumber") or 0) + REPORT_SERIES_OFFSET
    except (TypeError, ValueError):
        return REPORT_SERIES_OFFSET


def encapsulated_pdf(pdf: bytes, source: Sequence[Any], path: str | os.PathLike[str], *,
                     title: str = "deepmia clinical report", series_description: str = "deepmia report") -> Any:
    """Write ``pdf`` as an Encapsulated PDF instance in the study of the ``source`` datasets.

    Args:
        pdf: The PDF's bytes.
        source: The source series' datasets (headers suffice; :func:`deepmia.report.dicom.source_datasets`).
        path: The DICOM file to write.
        title: Document Title (0042,0010).
        series_description: Series Description of the new series.

    Returns:
        The written :class:`pydicom.Dataset`.

    Raises:
        InvalidArgumentError: ``pdf`` is not a PDF.
        SeriesError: No source dataset, or one without a StudyInstanceUID.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    where = Path(path)
    if not pdf.startswith(b"%PDF"):
        raise InvalidArgumentError("the document to encapsulate is not a PDF", path=where)
    if not source or not source[0].get("StudyInstanceUID"):
        raise SeriesError("no source instance with a StudyInstanceUID: the report cannot join its study",
                          path=getattr(source[0], "filename", where) if source else where)
    first, now = source[0], _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: titles and names may hold any script
    for keyword in (*_PATIENT, *_STUDY):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "DOC", generate_uid(), _series_number(first)
    ds.SeriesDescription = series_description[:64]
    ds.Manufacturer, ds.ConversionType = "deepmia", "WSD"
    from deepmia import __version__

    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the pages show the patient id and study date
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = DicomSequence([])
    ds.SourceInstanceSequence = DicomSequence([_reference(s) for s in source if s.get("SOPInstanceUID")])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")  # OB values have an even length
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF, generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ENCAPSULATED_PDF, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    where.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(where, enforce_file_format=True)
    return ds


def _reference(source: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    return item


def report_dicom(name: str, result: Any, out_dir: str | os.PathLike[str], *,
                 model_dir: str | os.PathLike[str] | None = None, lang: str = "en", predictor: Any = None,
                 datasets: Sequence[Any] | None = None, subfolder: str = "dicom") -> Path:
    """Write the report of one result as ``out_dir/<subfolder>/<name>.report.dcm`` in its source's study.

    It has the shape of :func:`deepmia.report.dicom.dicom_outputs` (``deepmia predict ... --dicom``), which can
    call it with the source datasets it already holds.

    Args:
        name: The case's output name.
        result: A segmentation, classification or detection result holding its input image.
        out_dir: The prediction's output folder.
        model_dir: The model directory (its card goes into the report; a classifier's Grad-CAM needs it).
        lang: Report language.
        predictor: A classification predictor already loaded (else loaded from ``model_dir``).
        datasets: The source series' datasets; default: read from the input image's DICOM source.
        subfolder: The folder under ``out_dir`` for the DICOM objects.

    Raises:
        InvalidArgumentError: No datasets given and the input was not read from DICOM.
        MissingDependencyError: A Chinese report with no CJK font.
    """
    from deepmia.io import image_stem
    from deepmia.report.clinical.render import results_report
    from deepmia.report.dicom_source import source_datasets

    if datasets is None:
        image = result.labels if result.task == "segment" else getattr(result, "image", None)
        datasets = source_datasets(image.meta if image is not None else {})
    pdf = results_report([(name, result)], model_dir=model_dir, lang=lang, fmt="pdf", predictor=predictor)
    path = Path(out_dir) / subfolder / f"{image_stem(name)}.report.dcm"
    encapsulated_pdf(pdf, datasets, path, title=f"deepmia report {image_stem(name)}")
    return path
