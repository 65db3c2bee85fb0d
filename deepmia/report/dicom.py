"""DICOM objects of task results, written with highdicom: a binary SEG and a TID 1500 Measurement Report (SR).

A segmentation becomes a SEG (one segment per label, coded from a label -> code table; or, on request, a
FRACTIONAL SEG of the class probabilities) in the source study, as a new series that references the source series
and its Frame of Reference, and an SR with the volume in mL and the largest diameter in mm of every structure and
the algorithm that measured it (TID 4019). A classification becomes an SR with the finding and the calibrated
probabilities, a detection an SR with one planar ROI (3D: one volumetric ROI, a box outline on every slice it
spans) and score per box. The batch loop's writer :func:`dicom_writer` writes them into ``OUT/dicom/``
(``deepmia predict MODEL SRC OUT --dicom``). A non-DICOM input gets a source series made for it when the patient
is stated (:mod:`deepmia.report.dicom_source`). See docs/clinical-outputs.md.

Example:
    >>> from deepmia.report.dicom import write_seg, write_sr   # doctest: +SKIP
    >>> seg = write_seg(result, datasets, "out/seg.dcm")       # doctest: +SKIP
    >>> write_sr(result, datasets, "out/sr.dcm", segmentation=seg)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import GeometryError, InvalidArgumentError, SeriesError
from deepmia.report.dicom_codes import concept, label_code, load_codes
from deepmia.report.dicom_source import DicomIdentity, made_source, source_datasets

__all__ = ["load_codes", "source_datasets", "write_seg", "write_fractional_seg", "write_sr", "read_seg",
           "dicom_outputs", "dicom_writer", "DicomIdentity"]

#: Series numbers of the new series: the source's plus these offsets.
SEG_SERIES_OFFSET, SR_SERIES_OFFSET = 1000, 2000
_MANUFACTURER = "deepmia"


def _frames_on_source(labels: Any, datasets: Sequence[Any], where: Any) -> np.ndarray:
    """A map (labels or probabilities) as one (rows, columns, channels) frame per source instance, in their order.

    Raises:
        GeometryError: The label map's grid is not the source series' grid.
    """
    arr = np.asarray(labels.array)
    if arr.ndim == 3:  # a 2D map (C, X, Y): one slice
        arr = arr[..., None]
    if arr.ndim != 4:
        raise GeometryError(f"a 2D or 3D map is needed, not shape {arr.shape}", path=where)
    vol = np.moveaxis(arr, 0, -1)  # (X, Y, Z, C)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    affine = np.asarray(labels.affine, dtype=float)
    inverse = np.linalg.inv(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    tol = max(1e-3, 0.01 * float(spacing.min()))
    slices = []
    for n, ds in enumerate(datasets):
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise GeometryError("a source instance has no ImagePositionPatient/ImageOrientationPatient",
                                path=getattr(ds, "filename", where))
        if (int(ds.Rows), int(ds.Columns)) != (vol.shape[1], vol.shape[0]):
            raise GeometryError(
                f"the label map ({vol.shape[0]} x {vol.shape[1]} in-plane) does not match the source "
                f"instances ({ds.Columns} x {ds.Rows})", path=where,
                fix="write the prediction on the source series' own grid (do not resample it)")
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
        directions = (ras_to_lps @ affine[:3, :2]) / spacing[:2]
        position = ras_to_lps @ np.asarray(ds.ImagePositionPatient, dtype=float)
        index = inverse[:3, :3] @ position + inverse[:3, 3]
        k = int(round(index[2]))
        off = np.abs(affine[:3, :3] @ (index - [0, 0, k]))
        if not np.allclose(directions.T, iop, atol=1e-3) or off.max() > tol or not 0 <= k < vol.shape[2]:
            raise GeometryError(
                f"the label map's grid does not match the source series (instance {ds.get('InstanceNumber', n)} "
                f"lies at voxel {np.round(index, 3).tolist()})", path=where,
                fix="predict on this series and write the label map on its grid")
        slices.append(k)
    if slices == list(range(slices[0], slices[0] + len(slices))):  # in order: no fancy-indexing copy
        stack = vol[:, :, slices[0]:slices[0] + len(slices)]
    else:
        stack = vol[:, :, slices]
    return np.ascontiguousarray(np.transpose(stack, (2, 1, 0, 3)))  # (frames, rows, columns, C): one copy


#: Patient and study attributes of Type 2 (present, may be empty) that highdicom copies from the source.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def _prepared(source_datasets: Sequence[Any], where: Any, *, frame_of_reference: bool = True) -> list[Any]:
    """The source datasets with the Type 2 attributes a real series may lack set to empty.

    A dataset that lacks none is used as it is; one that lacks some is replaced by a shallow copy (new element
    table, shared element values) that has them: the caller's datasets are never changed and never deep-copied.

    Raises:
        SeriesError: No instances.
        GeometryError: The series has no Frame of Reference.
    """
    import pydicom

    datasets = []
    for ds in source_datasets:
        missing = [keyword for keyword in _TYPE2 if keyword not in ds]
        if missing:
            copy = pydicom.Dataset()
            copy.update(ds)
            if hasattr(ds, "file_meta"):
                copy.file_meta = ds.file_meta
            for keyword in missing:
                setattr(copy, keyword, "")
            ds = copy
        datasets.append(ds)
    if frame_of_reference:
        _check_frame_of_reference(datasets, where)
    elif not datasets:
        raise SeriesError("the source series has no instances", path=where)
    return datasets


def _check_frame_of_reference(datasets: Sequence[Any], where: Any) -> None:
    if not datasets:
        raise SeriesError("the source series has no instances", path=where)
    if not all(ds.get("FrameOfReferenceUID") for ds in datasets):
        raise GeometryError(
            "the source series has no FrameOfReferenceUID: a SEG or SR cannot be placed in its space",
            path=where, fix="use a series with a Frame of Reference (cross-sectional images)")


def _algorithm(model_name: str) -> tuple[str, str]:
    from deepmia import __version__

    return model_name or "deepmia model", __version__


def _segment_descriptions(names: Sequence[str], codes: Mapping[str, Any], model_name: str) -> list[Any]:
    from highdicom import AlgorithmIdentificationSequence
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.sr.codedict import codes as dcm_codes

    name, version = _algorithm(model_name)
    algorithm = AlgorithmIdentificationSequence(
        name=name, family=dcm_codes.cid7162.ArtificialIntelligence, version=version)
    out = []
    for number, label in enumerate(names, start=1):
        code = label_code(label, codes)
        desc = SegmentDescription(
            segment_number=number, segment_label=label[:64], segmented_property_category=concept(code["category"]),
            segmented_property_type=concept(code["type"]), algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=None, tracking_id=None)
        if code.get("modifier"):
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
                [concept(code["modifier"])])
        out.append(desc)
    return out


#: Binary SEGs leave out frames where a segment is empty (highdicom's default, as dcmqi and TotalSegmentator do):
#: a TotalSegmentator-size mask has a fraction of the frames, files and writing time (benchmarks/seg_write_speed.py).
OMIT_EMPTY_FRAMES = True


def write_seg(
    result: Any, source_datasets: Sequence[Any], path: str | os.PathLike[str], *,
    codes: Mapping[str, Any] | None = None, model_name: str = "",
) -> Any:
    """Write a segmentation result as a binary DICOM SEG over its source series.

    One segment per label of ``result.label_names`` (also the empty ones), coded from ``codes`` (default: the
    shipped table); the SEG is a new series in the source study, on the source Frame of Reference, and its
    frames reference the source instances they lie on. Frames where a segment is empty are left out
    (:data:`OMIT_EMPTY_FRAMES`); :func:`read_seg` puts them back.

    Args:
        result: A :class:`~deepmia.tasks.segment.result.SegmentResult` whose label map is on the source grid.
        source_datasets: The source series' datasets (headers suffice).
        path: The file to write.
        codes: Label name -> codes (see ``deepmia/report/codes.json``).
        model_name: The algorithm's name (the model directory's name).

    Returns:
        The written ``highdicom.seg.Segmentation``.

    Raises:
        GeometryError: The label map is not on the source grid, or the source has no Frame of Reference.
    """
    import highdicom as hd

    where = Path(path)
    datasets = _prepared(source_datasets, where)
    frames = _frames_on_source(result.labels, datasets, where)[..., 0]
    values = sorted(int(k) for k in result.label_names)
    top = int(frames.max(initial=0))
    if values == list(range(1, len(values) + 1)) and top <= len(values) and frames.dtype.kind == "u":
        relabelled = frames  # labels 1..n are already the segment numbers
    else:  # label value -> segment number 1..n (labels not in the table -> 0)
        lut = np.zeros(max(top, *values, 0) + 1, dtype=np.uint16 if len(values) > 255 else np.uint8)
        lut[values] = np.arange(1, len(values) + 1)
        relabelled = lut[frames]
    names = [str(result.label_names[v]) for v in values]
    return _save_segmentation(relabelled, hd.seg.SegmentationTypeValues.BINARY, datasets, names, where,
                              codes=codes, model_name=model_name)


def write_fractional_seg(
    result: Any, source_datasets: Sequence[Any], path: str | os.PathLike[str], *,
    codes: Mapping[str, Any] | None = None, model_name: str = "",
) -> Any:
    """Write a segmentation's class probabilities as a FRACTIONAL DICOM SEG (probability, 8 bits: 0..255 = 0..1).

    One segment per label (background left out), coded as in :func:`write_seg`; every frame is kept.

    Raises:
        InvalidArgumentError: The result holds no probabilities (predict with ``--probabilities``).
        GeometryError: The maps are not on the source grid, or the source has no Frame of Reference.
    """
    import highdicom as hd

    where = Path(path)
    if result.probabilities is None:
        raise InvalidArgumentError("this result holds no probability maps for a fractional SEG", path=where,
                                   fix="predict with --probabilities")
    datasets = _prepared(source_datasets, where)
    values = sorted(int(k) for k in result.label_names)
    probs = result.probabilities
    if probs.num_channels <= max(values, default=0):
        raise InvalidArgumentError(f"{probs.num_channels} probability maps for labels up to {max(values)}",
                                   path=where, fix="the maps must hold one channel per class, background first")
    channels = probs.with_array(np.asarray(probs.array)[values])
    frames = np.clip(_frames_on_source(channels, datasets, where), 0.0, 1.0).astype(np.float32)
    names = [str(result.label_names[v]) for v in values]
    return _save_segmentation(frames, hd.seg.SegmentationTypeValues.FRACTIONAL, datasets, names, where,
                              codes=codes, model_name=model_name, fractional=True)


def _save_segmentation(pixels: np.ndarray, kind: Any, datasets: Sequence[Any], names: Sequence[str], where: Path, *,
                       codes: Mapping[str, Any] | None, model_name: str, fractional: bool = False) -> Any:
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian

    extra = {"fractional_type": hd.seg.SegmentationFractionalTypeValues.PROBABILITY} if fractional else {}
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=_segment_descriptions(names, codes if codes is not None else load_codes(), model_name),
        series_instance_uid=hd.UID(), series_number=_series_number(datasets[0], SEG_SERIES_OFFSET + int(fractional)),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
        manufacturer_model_name=(model_name or "deepmia model")[:64], software_versions=_algorithm(model_name)[1],
        device_serial_number="0",
        series_description=f"deepmia {'probability ' if fractional else ''}SEG {model_name}"[:64],
        transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=OMIT_EMPTY_FRAMES and not fractional, **extra,
    )
    where.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(where)
    return seg


def read_seg(path: str | os.PathLike[str], source: Any) -> Any:
    """Read a SEG back onto its source series' grid (deepmia's own reader; pydicom only, not highdicom).

    Every frame is placed by its ``ImagePositionPatient`` on the source image's grid; frames a SEG left out are
    empty. A binary SEG gives a label map (each voxel: the number of the segment it is in, 0 outside);
    a fractional SEG one probability channel (0..1) per segment.

    Args:
        path: The SEG file.
        source: The source series (a folder or file deepmia reads, or its :class:`~deepmia.image.Image`).

    Returns:
        An :class:`~deepmia.image.Image` on the source grid: ``(1, X, Y, Z)`` labels or ``(segments, X, Y, Z)``.

    Raises:
        GeometryError: A frame does not lie on the source grid, or has no plane position.
    """
    import pydicom

    from deepmia.image import Image
    from deepmia.io import read_image

    image = source if isinstance(source, Image) else read_image(source)
    shape = tuple(image.spatial_shape) + (1,) * (3 - image.spatial_dims)
    ds = pydicom.dcmread(path)
    n, rows, cols = int(ds.get("NumberOfFrames", 1)), int(ds.Rows), int(ds.Columns)
    raw = np.frombuffer(ds.PixelData, dtype=np.uint8)
    binary = ds.SegmentationType == "BINARY"
    if binary:
        frames = np.unpackbits(raw, bitorder="little")[: n * rows * cols].reshape(n, rows, cols)
        out = np.zeros((1, *shape), dtype=np.uint16 if len(ds.SegmentSequence) > 255 else np.uint8)
    else:
        frames = raw[: n * rows * cols].reshape(n, rows, cols) / float(ds.MaximumFractionalValue)
        out = np.zeros((len(ds.SegmentSequence), *shape), dtype=np.float32)
    inverse = np.linalg.inv(image.affine)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else pydicom.Dataset()
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        groups = {k: item.get(k) or shared.get(k) for k in ("SegmentIdentificationSequence", "PlanePositionSequence")}
        if not groups["PlanePositionSequence"] or not groups["SegmentIdentificationSequence"]:
            raise GeometryError(f"SEG frame {f + 1} has no plane position or segment number", path=path)
        number = int(groups["SegmentIdentificationSequence"][0].ReferencedSegmentNumber)
        lps = np.asarray(groups["PlanePositionSequence"][0].ImagePositionPatient, dtype=float)
        index = inverse[:3, :3] @ (lps * [-1.0, -1.0, 1.0]) + inverse[:3, 3]
        k = int(round(index[2]))
        if not np.allclose(index, [0, 0, k], atol=1e-2) or not 0 <= k < shape[2] or (rows, cols) != shape[1::-1]:
            raise GeometryError(f"SEG frame {f + 1} does not lie on the source grid (voxel {np.round(index, 3)})",
                                path=path, fix="read it with the series it was written on")
        if binary:
            out[0, :, :, k][frames[f].T > 0] = number
        else:
            out[number - 1, :, :, k] = frames[f].T
    if image.spatial_dims == 2:
        out = out[..., 0]
    return Image(out, image.affine, kind="label" if binary else "intensity", meta={"source": str(path)})


def _series_number(source: Any, offset: int) -> int:
    try:
        return int(source.get("SeriesNumber") or 0) + offset
    except (TypeError, ValueError):
        return offset


def _observation_context(model_name: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    name, _ = _algorithm(model_name)
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name=name[:64], manufacturer_name=_MANUFACTURER,
                                                       model_name=name[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device))


def _volume_groups(result: Any, codes: Mapping[str, Any], model_name: str, segmentation: Any) -> list[Any]:
    """One TID 1411 volumetric ROI group (with a SEG) or TID 1501 group (without) per structure.

    Each holds the structure's volume in mL (2D: area in mm2) and its largest diameter in mm
    (:func:`deepmia.report.shape.largest_diameters`: the 3D Feret diameter between voxel centres, world mm).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    from deepmia.report.shape import largest_diameters

    algorithm = hd.sr.AlgorithmIdentification(*_algorithm(model_name))
    sizes = {r["target"]: (r["quantity"], float(r["value"])) for r in result.measurements()
             if r["quantity"] in ("volume", "area")}
    numbers = {str(result.label_names[v]): n for n, v in enumerate(sorted(result.label_names), start=1)}
    values = {str(name): int(v) for v, name in result.label_names.items()}
    diameters = largest_diameters(np.asarray(result.labels.array)[0], result.labels.affine, values.values())
    groups = []
    for label, (quantity, size) in sizes.items():
        code = label_code(label, codes)
        measurements = [hd.sr.Measurement(
            name=dcm_codes.SCT.Volume if quantity == "volume" else dcm_codes.SCT.Area, value=size,
            unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter") if quantity == "volume"
            else hd.sr.CodedConcept("mm2", "UCUM", "square millimeter"), algorithm_id=algorithm),
            hd.sr.Measurement(name=dcm_codes.SCT.Diameter, value=round(diameters[values[label]], 4),
                              unit=dcm_codes.UCUM.Millimeter, derivation=dcm_codes.SCT.Maximum,
                              algorithm_id=algorithm)]
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64])
        common = {"tracking_identifier": tracking, "finding_type": concept(code["type"]),
                  "finding_category": concept(code["category"]), "algorithm_id": algorithm,
                  "measurements": measurements}
        if segmentation is not None:
            segment = _referenced_segment(segmentation, numbers[label])
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment,
                                                                                    **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    return groups


def write_sr(
    result: Any, source_datasets: Sequence[Any], path: str | os.PathLike[str], *,
    segmentation: Any = None, codes: Mapping[str, Any] | None = None, model_name: str = "",
) -> Any:
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) of a result.

    Segmentation: each structure of ``result.measurements()`` is one measurement group with its volume in mL
    (with ``segmentation``, the written SEG, each group references its segment). Classification: a "decision"
    group whose finding is the decided class, with its calibrated probability, then one group per class.
    Detection: one planar ROI (the box on the source image) per detection at or above the result's
    ``min_score`` with its score (3D: a volumetric ROI, the box's outline on each slice it spans). Every group
    carries its codes (``codes``, default the shipped table) and the algorithm (TID 4019: name = model,
    version = deepmia's).

    Returns:
        The written ``highdicom.sr.Comprehensive3DSR``.

    Raises:
        GeometryError: A segmentation's source series has no Frame of Reference; 2D boxes whose source is not
            one single-frame image of the detected image's size.
        InvalidArgumentError: A task without an SR (registration).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    from deepmia.report.dicom_findings import classification_groups, detection_groups

    where = Path(path)
    datasets = _prepared(source_datasets, where, frame_of_reference=_needs_frame(result))
    codes = codes if codes is not None else load_codes()
    algorithm = hd.sr.AlgorithmIdentification(*_algorithm(model_name))
    if result.task == "segment":
        groups = _volume_groups(result, codes, model_name, segmentation)
    elif result.task == "classify":
        sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in datasets]
        groups = classification_groups(result, codes, algorithm, sources)
    elif result.task == "detect":
        groups = detection_groups(result, codes, algorithm, datasets, where)
    else:
        raise InvalidArgumentError(f"an SR of a {result.task} result is not written yet", path=where)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model_name), procedure_reported=dcm_codes.SCT.ImagingProcedure,
        imaging_measurements=groups, title=dcm_codes.DCM.ImagingMeasurementReport)
    evidence = datasets + ([segmentation] if segmentation is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(),
        series_number=_series_number(datasets[0], SR_SERIES_OFFSET), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=_MANUFACTURER, is_complete=True, series_description=f"deepmia SR {model_name}"[:64])
    where.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(where)
    return sr


def _referenced_segment(segmentation: Any, number: int) -> Any:
    """The SR reference to segment ``number`` of a SEG (its frames and source images).

    highdicom's ``from_segmentation`` reads the segment of each frame from the per-frame groups; a one-frame SEG
    keeps it in the shared groups, so that case references the segment and the source series.
    """
    import highdicom as hd

    if int(segmentation.get("NumberOfFrames", 1)) > 1:
        return hd.sr.ReferencedSegment.from_segmentation(segmentation, number)
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID))


def _needs_frame(result: Any) -> bool:
    """Whether the result's SR places things in space (volumes, 3D boxes): its source needs a Frame of Reference."""
    return result.task == "segment" or (result.task == "detect" and np.asarray(result.boxes).shape[-1] == 6)


def dicom_outputs(name: str, result: Any, out_dir: str | os.PathLike[str], *,
                  model_dir: str | os.PathLike[str] | None = None, identity: DicomIdentity | None = None,
                  probabilities: bool = False, subfolder: str = "dicom") -> list[Path]:
    """Write the DICOM objects of one result into ``out_dir/dicom/`` (``out_dir/<subfolder>``).

    ``<name>.seg.dcm`` for a segmentation (with ``probabilities`` also ``<name>.prob.seg.dcm``, a fractional SEG),
    ``<name>.sr.dcm`` for a segmentation, classification or detection, and ``<name>.report.dcm``, the clinical
    report (:mod:`deepmia.report.clinical`) as an Encapsulated PDF. The source is the DICOM series or file the
    input was read from (its image's ``meta``); for a non-DICOM input with an ``identity`` (a patient), the
    input written as a DICOM series into ``<name>.source/`` (see :func:`deepmia.report.dicom_source.made_source`).

    Raises:
        InvalidArgumentError: A non-DICOM input without a patient, or a task without DICOM output (registration).
        GeometryError: The prediction's grid does not match the source, or a source without a Frame of Reference
            where one is needed.
    """
    from deepmia.io import image_stem
    from deepmia.report.clinical.encapsulated import report_dicom

    if result.task not in ("segment", "classify", "detect"):
        raise InvalidArgumentError(f"no DICOM output for a {result.task} result", fix="leave out --dicom")
    stem = image_stem(name)
    dst = Path(out_dir) / subfolder
    datasets, written = _source_of(result, dst / f"{stem}.source", identity)
    codes = load_codes(model_dir)
    model_name = Path(model_dir).name if model_dir is not None else ""
    where = dst / f"{stem}.sr.dcm"
    datasets = _prepared(datasets, where, frame_of_reference=_needs_frame(result))  # once for all objects
    sr_path = dst / f"{stem}.sr.dcm"
    report = functools.partial(report_dicom, name, result, out_dir, model_dir=model_dir, datasets=datasets,
                               subfolder=subfolder)
    if result.task != "segment":
        write_sr(result, datasets, sr_path, codes=codes, model_name=model_name)
        return [*written, sr_path, report()]
    seg_path = dst / f"{stem}.seg.dcm"
    seg = write_seg(result, datasets, seg_path, codes=codes, model_name=model_name)
    written += [seg_path]
    if probabilities:
        written.append(dst / f"{stem}.prob.seg.dcm")
        write_fractional_seg(result, datasets, written[-1], codes=codes, model_name=model_name)
    write_sr(result, datasets, sr_path, segmentation=seg, codes=codes, model_name=model_name)
    return [*written, sr_path, report()]


def _source_of(result: Any, folder: Path, identity: DicomIdentity | None) -> tuple[list[Any], list[Path]]:
    """The source datasets of a result, and the files of a source series made for a non-DICOM input."""
    image = result.labels if result.task == "segment" else result.image
    meta = image.meta if image is not None else {}
    if meta.get("format") == "dicom" and meta.get("source") or identity is None or not identity.given:
        return source_datasets(meta), []
    picture = result.image if result.image is not None else image
    if picture is None:
        raise InvalidArgumentError("the result holds no image to write as the DICOM source", path=folder)
    datasets = made_source(picture, identity, folder)
    return datasets, sorted(folder.iterdir())


def dicom_writer(model_dir: str | os.PathLike[str] | None = None, *, identity: DicomIdentity | None = None,
                 probabilities: bool = False) -> Callable[[str, Any, Path], list[Path]]:
    """A writer for :func:`deepmia.engine.batch.run_batch` that writes :func:`dicom_outputs` (it pickles).

    Args:
        model_dir: The model (its ``codes.json`` and name).
        identity: The patient of non-DICOM inputs (resolve it once per run: :meth:`DicomIdentity.resolved`).
        probabilities: Also a fractional SEG of the probability maps (segmentation predicted with them).
    """
    return functools.partial(dicom_outputs, model_dir=str(model_dir) if model_dir is not None else None,
                             identity=identity, probabilities=probabilities)
