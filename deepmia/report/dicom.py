"""DICOM objects of task results, written with highdicom: a binary SEG and a TID 1500 Measurement Report (SR).

A segmentation becomes a SEG (one segment per label, coded from a label -> code table) in the source study, as a
new series that references the source series and its Frame of Reference, and an SR with the volume of every
structure in mL and the algorithm that measured it (TID 4019). A classification becomes an SR with the finding
and the calibrated probabilities, a detection an SR with one planar ROI and score per box. The batch loop's
writer :func:`dicom_writer` writes them into ``OUT/dicom/`` (``deepmia predict MODEL SRC OUT --dicom``; the
command line takes segmentation models only so far, see docs/clinical-outputs.md).

Example:
    >>> from deepmia.report.dicom import write_seg, write_sr   # doctest: +SKIP
    >>> seg = write_seg(result, datasets, "out/seg.dcm")       # doctest: +SKIP
    >>> write_sr(result, datasets, "out/sr.dcm", segmentation=seg)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import GeometryError, InvalidArgumentError, SeriesError

__all__ = ["load_codes", "source_datasets", "write_seg", "write_sr", "dicom_outputs", "dicom_writer"]

#: Series numbers of the new series: the source's plus these offsets.
SEG_SERIES_OFFSET, SR_SERIES_OFFSET = 1000, 2000
_MANUFACTURER = "deepmia"


def load_codes(model_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The label -> code table: the shipped ``deepmia/report/codes.json``, overridden by ``MODEL_DIR/codes.json``.

    Raises:
        InvalidArgumentError: The model's ``codes.json`` is not a JSON object of label entries.
    """
    table = json.loads(resources.files("deepmia.report").joinpath("codes.json").read_text(encoding="utf-8"))
    own = Path(model_dir) / "codes.json" if model_dir is not None else None
    if own is not None and own.is_file():
        try:
            extra = json.loads(own.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"not valid JSON: {exc}", path=own, fix="fix the file or remove it") from None
        if not isinstance(extra, dict):
            raise InvalidArgumentError("codes.json must be an object of label -> codes", path=own)
        table |= extra
    return {k: v for k, v in table.items() if not k.startswith("_")}


def _concept(triple: Sequence[str]) -> Any:
    from highdicom.sr import CodedConcept

    value, scheme, meaning = triple
    return CodedConcept(value=str(value), scheme_designator=str(scheme), meaning=str(meaning))


_STRUCTURE, _FINDING = ["91723000", "SCT", "Anatomical Structure"], ["404684003", "SCT", "Finding"]


def _label_code(name: str, codes: Mapping[str, Any], category: Sequence[str] = _STRUCTURE) -> dict[str, Any]:
    """Codes of label ``name``; a label missing from the table gets a local (99DEEPMIA) placeholder type."""
    entry = codes.get(name) or codes.get(name.lower())
    if entry:
        return entry
    return {"category": list(category), "type": [name[:16], "99DEEPMIA", name[:64]],
            "note": "placeholder: no code in the table"}


def source_datasets(meta: Mapping[str, Any]) -> list[Any]:
    """The source series' datasets (headers, no pixels) of an image read from DICOM.

    Uses ``meta["source"]`` (the folder the series was read from, or the DICOM file) and ``meta["series_uid"]``.

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
            path=source or meta.get("case_id"),
            fix="predict on the DICOM series folder, or leave out --dicom",
        )
    found = [s for s in list_series(source, recursive=True) if s.series_uid == uid]
    if not found:
        raise SeriesError(f"the source series {uid} is no longer in the folder", path=source)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in found[0].files]


def _frames_on_source(labels: Any, datasets: Sequence[Any], where: Any) -> np.ndarray:
    """The label map as one (rows, columns) frame per source instance, in the order of ``datasets``.

    Raises:
        GeometryError: The label map's grid is not the source series' grid.
    """
    arr = np.asarray(labels.array)
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise GeometryError(f"a 3D label map of one channel is needed, not shape {arr.shape}", path=where)
    vol = arr[0]
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    affine = np.asarray(labels.affine, dtype=float)
    inverse = np.linalg.inv(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    tol = max(1e-3, 0.01 * float(spacing.min()))
    frames = np.empty((len(datasets), vol.shape[1], vol.shape[0]), dtype=vol.dtype)
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
        frames[n] = vol[:, :, k].T
    return frames


#: Patient and study attributes of Type 2 (present, may be empty) that highdicom copies from the source.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
          "AccessionNumber", "ReferringPhysicianName")


def _prepared(source_datasets: Sequence[Any], where: Any, *, frame_of_reference: bool = True) -> list[Any]:
    """Copies of the source datasets with the Type 2 attributes a real series may lack set to empty.

    Raises:
        SeriesError: No instances.
        GeometryError: The series has no Frame of Reference.
    """
    import copy

    datasets = []
    for ds in source_datasets:
        ds = copy.deepcopy(ds)
        for keyword in _TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
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
        code = _label_code(label, codes)
        desc = SegmentDescription(
            segment_number=number, segment_label=label[:64], segmented_property_category=_concept(code["category"]),
            segmented_property_type=_concept(code["type"]), algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=None, tracking_id=None)
        if code.get("modifier"):
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = DicomSequence(
                [_concept(code["modifier"])])
        out.append(desc)
    return out


def write_seg(
    result: Any, source_datasets: Sequence[Any], path: str | os.PathLike[str], *,
    codes: Mapping[str, Any] | None = None, model_name: str = "",
) -> Any:
    """Write a segmentation result as a binary DICOM SEG over its source series.

    One segment per label of ``result.label_names`` (also the empty ones), coded from ``codes`` (default: the
    shipped table); the SEG is a new series in the source study, on the source Frame of Reference, and its
    frames reference the source instances they lie on.

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
    from pydicom.uid import ExplicitVRLittleEndian

    where = Path(path)
    datasets = _prepared(source_datasets, where)
    frames = _frames_on_source(result.labels, datasets, where)
    values = sorted(int(k) for k in result.label_names)
    relabelled = np.zeros(frames.shape, dtype=np.uint16 if len(values) > 255 else np.uint8)
    for number, value in enumerate(values, start=1):
        relabelled[frames == value] = number
    names = [str(result.label_names[v]) for v in values]
    first = datasets[0]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=relabelled, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(names, codes if codes is not None else load_codes(), model_name),
        series_instance_uid=hd.UID(), series_number=_series_number(first, SEG_SERIES_OFFSET),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
        manufacturer_model_name=(model_name or "deepmia model")[:64], software_versions=_algorithm(model_name)[1],
        device_serial_number="0", series_description=f"deepmia SEG {model_name}"[:64],
        transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=False,
    )
    where.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(where)
    return seg


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
    """One TID 1411 volumetric ROI group (with a SEG) or TID 1501 group (without) per structure."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    algorithm = hd.sr.AlgorithmIdentification(*_algorithm(model_name))
    volumes = {r["target"]: float(r["value"]) for r in result.measurements() if r["quantity"] == "volume"}
    numbers = {str(result.label_names[v]): n for n, v in enumerate(sorted(result.label_names), start=1)}
    groups = []
    for label, ml in volumes.items():
        code = _label_code(label, codes)
        measurement = hd.sr.Measurement(
            name=dcm_codes.SCT.Volume, value=ml, unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"),
            algorithm_id=algorithm)
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64])
        common = {"tracking_identifier": tracking, "finding_type": _concept(code["type"]),
                  "finding_category": _concept(code["category"]), "algorithm_id": algorithm,
                  "measurements": [measurement]}
        if segmentation is not None:
            segment = hd.sr.ReferencedSegment.from_segmentation(segmentation, numbers[label])
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment,
                                                                                    **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    return groups


def _classification_groups(result: Any, codes: Mapping[str, Any], algorithm: Any, sources: list[Any]) -> list[Any]:
    """TID 1501 groups: the decided class(es) as the finding with its probability, then every class's probability."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    probability = dict(zip(result.class_names, (float(p) for p in result.probabilities), strict=True))

    def group(identifier: str, name: str) -> Any:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier[:64]),
            finding_type=_concept(_label_code(name, codes, _FINDING)["type"]), algorithm_id=algorithm,
            source_images=sources,
            measurements=[hd.sr.Measurement(name=dcm_codes.DCM.Probability, value=probability[name],
                                            unit=dcm_codes.UCUM.NoUnits, algorithm_id=algorithm)])

    decided = [c for c in str(result.label).split(";") if c in probability]  # multi-label: names joined by ';'
    return [group("decision", c) for c in decided] + [group(str(c), str(c)) for c in result.class_names]


def _detection_groups(result: Any, codes: Mapping[str, Any], algorithm: Any, datasets: list[Any],
                      where: Path) -> list[Any]:
    """One group per detection at or above ``min_score``: a planar ROI (2D) or its finding and score (3D)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    planar = result.boxes.shape[1] == 4
    if planar:
        ds = datasets[0]
        if len(datasets) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
            raise GeometryError("2D boxes need a source of one single-frame image", path=where)
        shape = result.image.spatial_shape if result.image is not None else None
        if shape is not None and tuple(shape) != (int(ds.Columns), int(ds.Rows)):
            raise GeometryError(f"the detections' image ({shape[0]} x {shape[1]}) is not the source image "
                                f"({ds.Columns} x {ds.Rows})", path=where)
    groups = []
    for n, i in enumerate(result.kept(), start=1):
        name = str(result.class_names[int(result.labels[i])])
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{name} {n}"[:64]),
            "finding_type": _concept(_label_code(name, codes, _FINDING)["type"]), "algorithm_id": algorithm,
            "measurements": [hd.sr.Measurement(name=dcm_codes.DCM.Probability, value=float(result.scores[i]),
                                               unit=dcm_codes.UCUM.NoUnits, algorithm_id=algorithm)]}
        if planar:  # SCOORD pixel coordinates (column, row); 0,0 is the top left corner of the top left pixel
            x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]),
                source_image=hd.sr.SourceImageForRegion.from_source_image(datasets[0]))
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **common))
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
    ``min_score`` with its score (3D: the finding and its score, no ROI). Every group carries its codes
    (``codes``, default the shipped table) and the algorithm (TID 4019: name = model, version = deepmia's).

    Returns:
        The written ``highdicom.sr.Comprehensive3DSR``.

    Raises:
        GeometryError: A segmentation's source series has no Frame of Reference; 2D boxes whose source is not
            one single-frame image of the detected image's size.
        InvalidArgumentError: A task without an SR (registration).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    where = Path(path)
    datasets = _prepared(source_datasets, where, frame_of_reference=result.task == "segment")
    codes = codes if codes is not None else load_codes()
    algorithm = hd.sr.AlgorithmIdentification(*_algorithm(model_name))
    if result.task == "segment":
        groups = _volume_groups(result, codes, model_name, segmentation)
    elif result.task == "classify":
        sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in datasets]
        groups = _classification_groups(result, codes, algorithm, sources)
    elif result.task == "detect":
        groups = _detection_groups(result, codes, algorithm, datasets, where)
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


def dicom_outputs(name: str, result: Any, out_dir: str | os.PathLike[str], *,
                  model_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the DICOM objects of one result into ``out_dir/dicom/``.

    ``<name>.seg.dcm`` for a segmentation, ``<name>.sr.dcm`` for a segmentation, classification or detection. The
    source is the DICOM series or file the input was read from (its image's ``meta["source"]`` and
    ``meta["series_uid"]``).

    Raises:
        InvalidArgumentError: The input was not read from DICOM, or the task has no DICOM output (registration).
        GeometryError: The prediction's grid does not match the source, or a segmentation's source has no Frame
            of Reference.
    """
    from deepmia.io import image_stem

    if result.task not in ("segment", "classify", "detect"):
        raise InvalidArgumentError(f"no DICOM output for a {result.task} result yet", fix="leave out --dicom")
    image = result.labels if result.task == "segment" else result.image
    datasets = source_datasets(image.meta if image is not None else {})
    codes = load_codes(model_dir)
    model_name = Path(model_dir).name if model_dir is not None else ""
    stem = image_stem(name)
    dst = Path(out_dir) / "dicom"
    sr_path = dst / f"{stem}.sr.dcm"
    if result.task != "segment":
        write_sr(result, datasets, sr_path, codes=codes, model_name=model_name)
        return [sr_path]
    seg_path = dst / f"{stem}.seg.dcm"
    seg = write_seg(result, datasets, seg_path, codes=codes, model_name=model_name)
    write_sr(result, datasets, sr_path, segmentation=seg, codes=codes, model_name=model_name)
    return [seg_path, sr_path]


def dicom_writer(model_dir: str | os.PathLike[str] | None = None) -> Callable[[str, Any, Path], list[Path]]:
    """A writer for :func:`deepmia.engine.batch.run_batch` that writes :func:`dicom_outputs` (it pickles)."""
    return functools.partial(dicom_outputs, model_dir=str(model_dir) if model_dir is not None else None)
