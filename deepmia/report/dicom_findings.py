"""The findings of classification and detection results as TID 1500 measurement groups (for :func:`write_sr`).

Classification: a "decision" group whose finding is the decided class with its calibrated probability, then one
group per class. Detection: one planar ROI per 2D box, or one volumetric ROI per 3D box (the box's outline on every
source slice it spans), with its score.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import GeometryError
from deepmia.report.dicom_codes import FINDING, concept, label_code

__all__ = ["classification_groups", "detection_groups"]


def classification_groups(result: Any, codes: Mapping[str, Any], algorithm: Any, sources: list[Any]) -> list[Any]:
    """TID 1501 groups: the decided class(es) as the finding with its probability, then every class's probability."""
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    probability = dict(zip(result.class_names, (float(p) for p in result.probabilities), strict=True))

    def group(identifier: str, name: str) -> Any:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier[:64]),
            finding_type=concept(label_code(name, codes, FINDING)["type"]), algorithm_id=algorithm,
            source_images=sources,
            measurements=[hd.sr.Measurement(name=dcm_codes.DCM.Probability, value=probability[name],
                                            unit=dcm_codes.UCUM.NoUnits, algorithm_id=algorithm)])

    decided = [c for c in str(result.label).split(";") if c in probability]  # multi-label: names joined by ';'
    return [group("decision", c) for c in decided] + [group(str(c), str(c)) for c in result.class_names]


def detection_groups(result: Any, codes: Mapping[str, Any], algorithm: Any, datasets: list[Any],
                      where: Path) -> list[Any]:
    """One group per detection at or above ``min_score``: a planar ROI (2D) or a volumetric ROI (3D), its score.

    A 3D box is a volumetric ROI made of the box's outline on every source slice it spans (TID 1411 with one
    image region per slice), each region referencing the instance it lies on.
    """
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
    slice_of = None if planar else _slices_of(result, datasets, where)
    groups = []
    for n, i in enumerate(result.kept(), start=1):
        name = str(result.class_names[int(result.labels[i])])
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{name} {n}"[:64]),
            "finding_type": concept(label_code(name, codes, FINDING)["type"]), "algorithm_id": algorithm,
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
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_regions=_box_regions(result.boxes[i], slice_of, where), **common))
    return groups


def _slices_of(result: Any, datasets: list[Any], where: Path) -> dict[int, Any]:
    """Slice index of the detected volume -> the source instance that lies on it.

    Raises:
        GeometryError: An instance does not lie on the detected volume's grid.
    """
    inverse = np.linalg.inv(np.asarray(result.affine, dtype=float))
    found = {}
    for ds in datasets:
        if "ImagePositionPatient" not in ds:
            raise GeometryError("a source instance has no ImagePositionPatient", path=where)
        lps = np.asarray(ds.ImagePositionPatient, dtype=float)
        index = inverse[:3, :3] @ (lps * [-1.0, -1.0, 1.0]) + inverse[:3, 3]
        k = int(round(index[2]))
        if not np.allclose(index, [0, 0, k], atol=1e-2):
            raise GeometryError(f"the detections' volume is not on the source series' grid (an instance lies at "
                                f"voxel {np.round(index, 3).tolist()})", path=where,
                                fix="detect on this series, on its own grid")
        found[k] = ds
    return found


def _box_regions(box: np.ndarray, slice_of: dict[int, Any], where: Path) -> list[Any]:
    """The outline of a 3D box ``[x0, y0, z0, x1, y1, z1]`` (voxel edges) on every slice it spans."""
    import highdicom as hd

    x0, y0, z0, x1, y1, z1 = (float(v) for v in box)
    outline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    ks = [k for k in range(int(np.floor(z0)), int(np.ceil(z1))) if k in slice_of]
    if not ks:
        raise GeometryError(f"a box spans slices {z0:g}..{z1:g}, none of them in the source series", path=where)
    return [hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline,
                              source_image=hd.sr.SourceImageForRegion.from_source_image(slice_of[k])) for k in ks]
