import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmia import Image
from deepmia.errors import GeometryError, InvalidArgumentError
from deepmia.image import affine_from_geometry


def rotation(angles):
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_geometry_is_derived_from_affine():
    affine = affine_from_geometry([0.5, 0.7, 3.0], [10, -20, 30], np.diag([-1, -1, 1]))
    img = Image(np.zeros((1, 4, 5, 6), np.int16), affine)
    assert img.spacing == pytest.approx((0.5, 0.7, 3.0))
    assert img.origin == pytest.approx((10, -20, 30))
    assert img.orientation == "LPS"
    assert not img.is_oblique
    assert img.spatial_dims == 3 and img.num_channels == 1 and img.spatial_shape == (4, 5, 6)


def test_2d_image():
    img = Image(np.zeros((3, 8, 9), np.uint8), np.diag([0.2, 0.3, 1.0, 1.0]))
    assert img.spatial_dims == 2
    assert img.spacing == pytest.approx((0.2, 0.3))
    assert img.voxel_to_world([[1, 1]]) == pytest.approx(np.array([[0.2, 0.3, 0.0]]))


@settings(max_examples=50, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-np.pi, np.pi)] * 3),
    spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3),
    flips=st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
)
def test_world_voxel_round_trip(angles, spacing, flips, origin):
    affine = affine_from_geometry(spacing, origin, rotation(angles) * np.array(flips)[None, :])
    img = Image(np.zeros((1, 3, 3, 3), np.float32), affine)
    pts = np.array([[0, 0, 0], [1.5, 2.0, -3.0], [10, 20, 30]])
    assert img.world_to_voxel(img.voxel_to_world(pts)) == pytest.approx(pts, abs=1e-6)
    assert img.spacing == pytest.approx(spacing, rel=1e-9)
    assert np.linalg.det(img.direction) == pytest.approx(np.prod(flips), abs=1e-9)


def test_repr_shows_shape_spacing_orientation_dtype_memory():
    text = repr(Image(np.zeros((1, 64, 64, 10), np.float32), np.diag([1, 1, 2.5, 1])))
    for part in ("(1, 64, 64, 10)", "2.5", "RAS", "float32", "KiB"):
        assert part in text


@pytest.mark.parametrize("shape", [(4, 4), (1, 2, 3, 4, 5)])
def test_bad_array_rank_refused(shape):
    with pytest.raises(InvalidArgumentError, match="channel first"):
        Image(np.zeros(shape))


@pytest.mark.parametrize("bad", [np.diag([1.0, 0.0, 1.0, 1.0]), np.full((4, 4), np.nan), np.eye(3)])
def test_bad_affine_refused(bad):
    with pytest.raises(GeometryError):
        Image(np.zeros((1, 2, 2, 2)), bad)


def test_label_must_be_integral():
    with pytest.raises(InvalidArgumentError, match="integer"):
        Image(np.zeros((1, 2, 2, 2), np.float32), kind="label")
    lab = Image(np.zeros((1, 2, 2, 2), np.uint8), kind="label")
    assert lab.with_array(np.ones((2, 2, 2, 2), np.uint8)).kind == "label"


def test_affine_is_read_only_and_with_array_checks_shape():
    img = Image(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError):
        img.affine[0, 0] = 5
    with pytest.raises(InvalidArgumentError, match="spatial shape"):
        img.with_array(np.zeros((1, 3, 3, 3)))


def test_callers_affine_is_copied_not_frozen():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    img = Image(np.zeros((1, 2, 2, 2)), affine)
    affine[0, 0] = 5.0  # the caller's array stays writable and the image keeps its own geometry
    assert img.spacing[0] == 2.0
