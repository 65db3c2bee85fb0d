"""Transforms: point mapping, round trips through inverse and files, warping images, labels and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from deepmia.errors import GeometryError, InvalidArgumentError, ReadError, WriteError
from deepmia.image import Image
from deepmia.processing.spatial_transform import SpatialTransform, points_from_file
from deepmia.tasks.register.synthetic import random_deformation


def _rotation(deg: float, shift=(3.0, -2.0, 5.0), scale_z: float = 1.1) -> np.ndarray:
    th = np.deg2rad(deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, scale_z]]
    m[:3, 3] = shift
    return m


@pytest.fixture
def grid() -> Image:
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-30, -20, 10]
    return Image(np.zeros((1, 32, 30, 24), np.float32), affine)


def test_matrix_round_trip_and_points_follow_ras():
    m = _rotation(10)
    t = SpatialTransform.from_matrix(m)
    assert np.allclose(t.matrix, m)
    p = np.random.default_rng(0).uniform(-40, 40, (7, 3))
    assert np.allclose(t.map_points(p), p @ m[:3, :3].T + m[:3, 3])
    assert np.allclose(t.inverse().map_points(t.map_points(p)), p, atol=1e-9)


def test_compose_linear_is_matrix_product():
    a, b = _rotation(10), _rotation(-25, shift=(1, 2, 3), scale_z=0.9)
    t = SpatialTransform.from_matrix(a).then(SpatialTransform.from_matrix(b))
    assert t.is_linear
    assert np.allclose(t.matrix, b @ a)


def test_dense_inverse_restores_points(grid):
    t = random_deformation(grid, seed=3, max_displacement_mm=4.0, smoothness_mm=20.0)
    assert not t.is_linear
    inner = grid.voxel_to_world(np.random.default_rng(1).uniform(6, 18, (40, 3)))
    back = t.inverse().map_points(t.map_points(inner))
    assert np.abs(back - inner).max() < 0.1


def test_save_load_identical(grid, tmp_path):
    t = random_deformation(grid, seed=4)
    p = grid.voxel_to_world(np.random.default_rng(2).uniform(0, 20, (20, 3)))
    for name in ("t.h5", "field.nii.gz"):
        path = t.save(tmp_path / name)
        loaded = SpatialTransform.read(path)
        assert np.abs(loaded.map_points(p) - t.map_points(p)).max() < 1e-4
    lin = SpatialTransform.from_matrix(_rotation(5))
    assert np.allclose(SpatialTransform.read(lin.save(tmp_path / "a.tfm")).matrix, lin.matrix)


def test_displacement_field_round_trip(grid):
    u = np.random.default_rng(0).normal(0, 1, (3, *grid.spatial_shape)).astype(np.float32)
    t = SpatialTransform.from_displacement(grid.with_array(u))
    assert np.allclose(t.displacement().array, u, atol=1e-5)
    assert np.allclose(t.displacement().affine, grid.affine)


def test_apply_translation_moves_content_and_keeps_label_dtype(grid):
    arr = np.zeros(grid.spatial_shape, np.int16)
    arr[10:14, 10:14, 8:12] = 3
    label = Image(arr[None], grid.affine, kind="label")
    shift = np.eye(4)
    shift[0, 3] = 4.0  # fixed x -> moving x + 4 mm = 2 voxels
    warped = SpatialTransform.from_matrix(shift).apply(label, reference=grid)
    assert warped.dtype == np.int16 and set(np.unique(warped.array)) == {0, 3}
    assert np.array_equal(warped.array[0, 8:12, 10:14, 8:12], arr[10:14, 10:14, 8:12])
    assert warped.same_geometry(grid)
    with pytest.raises(InvalidArgumentError, match="nearest"):
        SpatialTransform.from_matrix(shift).apply(label, reference=grid, interpolation="linear")


def test_boxes_enclose_mapped_corners():
    t = SpatialTransform.from_matrix(_rotation(30, shift=(0, 0, 0), scale_z=1.0))
    box = t.map_boxes([[0, 0, 0, 10, 10, 10]])[0]
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    assert np.allclose(box, [-10 * s, 0, 0, 10 * c, 10 * (s + c), 10])


def test_2d_transform_and_errors(tmp_path):
    img = Image(np.zeros((1, 20, 20), np.float32))
    m = np.eye(3)
    m[:2, 2] = [1, 2]
    t = SpatialTransform.from_matrix(m)
    assert np.allclose(t.map_points([[0, 0, 5]]), [[1, 2, 5]])
    with pytest.raises(GeometryError):
        t.apply(Image(np.zeros((1, 4, 4, 4), np.float32)), reference=img)
    with pytest.raises(InvalidArgumentError):
        SpatialTransform.from_matrix(np.zeros((4, 4)))
    with pytest.raises(WriteError):
        t.save(tmp_path / "t.png")
    (tmp_path / "bad.tfm").write_text("nonsense")
    with pytest.raises(ReadError):
        SpatialTransform.read(tmp_path / "bad.tfm")


def test_points_from_file(tmp_path):
    (tmp_path / "p.csv").write_text("x,y,z\n1,2,3\n4,5,6\n")
    assert points_from_file(tmp_path / "p.csv").shape == (2, 3)
    (tmp_path / "q.csv").write_text("1,2\n3\n")
    with pytest.raises(ReadError):
        points_from_file(tmp_path / "q.csv")


def test_module_lives_in_processing_and_imports_nothing_above_it():
    import ast
    import importlib.util
    from pathlib import Path

    import deepmia.processing.spatial_transform as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    above = ("deepmia.metrics", "deepmia.nn", "deepmia.transforms", "deepmia.engine", "deepmia.tasks",
             "deepmia.explain", "deepmia.report", "deepmia.cli", "deepmia.service")
    assert not [m for m in imported if m.startswith(above)]
    assert importlib.util.find_spec("deepmia.tasks.register.transforms") is None  # no alias left behind
