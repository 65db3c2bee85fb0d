"""Figures: orientation letters from the affine, scale bars from the spacing, legends, min-score boxes."""

import numpy as np
import pytest
from PIL import Image as PILImage

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.report.figures import (
    classification_figure,
    detection_figure,
    edge_letters,
    geometry_known,
    label_colour,
    largest_section,
    panel,
    plane_geometry,
    segmentation_figure,
)


def _volume(shape=(40, 48, 36), spacing=(1.0, 1.0, 2.0), affine=None, fmt="nifti"):
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, (1, *shape)).astype(np.float32)
    aff = np.diag([*spacing, 1.0]) if affine is None else affine
    return Image(arr, aff, meta={"format": fmt})


def _png(path):
    return np.asarray(PILImage.open(path).convert("RGB"))


def test_letters_follow_the_affine():
    # Radiological axial view: columns run to the patient's left, rows to posterior.
    assert edge_letters(np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])) == ("R", "L", "A", "P")
    assert edge_letters(np.array([0, -1.0, 0]), np.array([0, 0, -1.0])) == ("A", "P", "S", "I")
    # A 2D DICOM image in LPS (x to the patient's left, y to posterior): the letters come from the affine's columns.
    lps = np.diag([-0.5, -0.5, 1.0, 1.0])
    img = Image(np.zeros((1, 8, 8), np.float32), lps, meta={"format": "dicom"})
    assert plane_geometry(img, "axial") == (0.5, ("R", "L", "A", "P"))
    flipped = Image(img.array, np.diag([0.5, 0.5, 1.0, 1.0]), meta={"format": "dicom"})
    assert plane_geometry(flipped, "axial")[1] == ("L", "R", "P", "A")
    sagittal_mm, sagittal = plane_geometry(_volume(spacing=(1.0, 0.8, 2.0)), "sagittal")
    assert sagittal == ("A", "P", "S", "I") and sagittal_mm == pytest.approx(0.8)


def test_unknown_orientation_and_spacing_draw_no_letters_or_bar():
    png = _volume(fmt="png")
    png.meta["spacing_unknown"] = True  # as deepmia.io.raster reads a PNG (see test_raster)
    assert geometry_known(png) == (False, False)
    assert geometry_known(_volume(fmt="nifti")) == (True, True)
    no_position = Image(np.zeros((1, 4, 4), np.float32), np.eye(4), meta={"format": "dicom", "geometry": "none: ..."})
    assert geometry_known(no_position) == (False, True)
    assert geometry_known(Image(np.zeros((1, 4, 4), np.float32), np.eye(4), meta={"spacing_unknown": True}))[1] is False
    black = np.zeros((32, 32, 3), np.uint8)
    assert panel(black).max() == 0  # nothing drawn
    assert (panel(black, col_mm=1.0) == 255).all(axis=-1).any()  # the white scale bar
    assert (panel(black, letters=("R", "L", "A", "P"))[..., 2] == 0).any()  # yellow letters
    assert (panel(black, letters=("R", "L", "A", "P")) > 0).any()


def test_segmentation_figure_cuts_at_the_largest_section_and_shows_a_legend(tmp_path):
    image = _volume()
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[10:20, 10:20, 25] = 1  # one big slice at z=25 ...
    lab[12:14, 12:14, 5:30] = 2  # ... and a thin rod along z
    labels = image.with_array(lab[None], kind="label")
    assert largest_section(labels)["axial"] == 25
    many = segmentation_figure(image, labels, tmp_path / "a.png", label_names={1: "lesion", 2: "vessel", 3: "cyst"})
    pic = _png(many)
    assert (pic == label_colour(2)).all(axis=-1).any()  # legend swatch of the second label
    thin = _volume(shape=(40, 48, 6))
    few = segmentation_figure(thin, thin.with_array(lab[None, ..., :6], kind="label"), tmp_path / "b.png")
    assert _png(few).shape[1] < pic.shape[1] / 2  # 6 slices: the axial panel only
    with pytest.raises(InvalidArgumentError, match="label map shape"):
        segmentation_figure(image, Image(lab[None, :-1], np.eye(4), kind="label"), tmp_path / "c.png")


def test_detection_figure_draws_only_boxes_above_min_score(tmp_path):
    image = Image(np.full((3, 64, 48), 128, np.uint8), np.eye(4), meta={"format": "jpeg"})
    boxes = np.array([[4, 4, 30, 30], [10, 20, 40, 44]], float)
    path = detection_figure(image, boxes, np.array([0.9, 0.2]), np.array([1, 0]), tmp_path / "d.png",
                            class_names=["Platelets", "RBC"], min_score=0.5)
    pic = _png(path)
    body = pic[: pic.shape[0] - 140]  # the picture above the legend strip
    assert (body == label_colour(2)).all(axis=-1).any()  # the RBC box (0.9)
    assert not (body == label_colour(1)).all(axis=-1).any()  # no platelet box (0.2 < 0.5)


def test_classification_figure_blends_saliency_and_checks_its_shape(tmp_path):
    image = Image(np.random.default_rng(0).uniform(0, 255, (1, 28, 28)).astype(np.float32), np.eye(4),
                  meta={"format": "png"})
    heat = np.zeros((28, 28), np.float32)
    heat[5:10, 5:10] = 1.0
    pic = _png(classification_figure(image, tmp_path / "c.png", title="pneumonia (p = 0.97)", saliency=heat))
    plain = _png(classification_figure(image, tmp_path / "p.png", title="pneumonia (p = 0.97)"))
    assert not (np.ptp(plain.astype(int), axis=-1) > 30).any()  # grey picture, black text
    assert (np.ptp(pic.astype(int), axis=-1) > 30).any()  # the heat map is colour
    with pytest.raises(InvalidArgumentError, match="saliency shape"):
        classification_figure(image, tmp_path / "e.png", title="x", saliency=np.zeros((14, 14)))
