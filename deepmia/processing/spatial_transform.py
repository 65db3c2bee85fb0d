"""Spatial transforms as objects: map points and boxes, warp images and label maps, compose, invert, save, load.

A :class:`SpatialTransform` maps points of the **fixed** image's world to the **moving** image's world (RAS+,
mm), the direction ITK and every registration library use: to warp a moving image onto the fixed grid, each fixed
voxel samples the moving image at ``T(x)``. Moving-space points and boxes go to fixed space through
:meth:`SpatialTransform.inverse`. Internally the transform is a SimpleITK transform in ITK's LPS world; the RAS+
conversion happens at this boundary (points and vectors) and in :mod:`deepmia.io.sitk` (images).

Files: ``.tfm``/``.txt``/``.h5``/``.mat`` are ITK transform files (readable by 3D Slicer, ANTs, elastix's
ITK back end); ``.nii``/``.nii.gz`` holds a displacement field in the ITK/ANTs convention (a 5D vector NIfTI
whose components are LPS millimetres on the field's grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepmia._validate import look_up_option
from deepmia.errors import GeometryError, InvalidArgumentError, ReadError, WriteError
from deepmia.image import LPS_TO_RAS, Image
from deepmia.io.sitk import from_sitk, to_sitk

__all__ = ["SpatialTransform", "Interpolation", "check_same_dims"]

Interpolation = Literal["linear", "bspline", "nearest"]

_LINEAR_NAMES = {
    "AffineTransform",
    "Euler2DTransform",
    "Euler3DTransform",
    "Similarity2DTransform",
    "Similarity3DTransform",
    "TranslationTransform",
    "VersorTransform",
    "VersorRigid3DTransform",
    "ScaleTransform",
    "ScaleSkewVersor3DTransform",
    "ScaleVersor3DTransform",
    "ComposeScaleSkewVersor3DTransform",
    "IdentityTransform",
}
_TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat", ".xfm")
_FIELD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def _sitk():
    import SimpleITK as sitk

    return sitk


def _flip(dims: int) -> np.ndarray:
    """The RAS <-> LPS sign flip of the first ``dims`` world axes (x and y change sign; z does not)."""
    return np.diag(LPS_TO_RAS)[:dims]


def check_same_dims(a: Image, b: Image, *, names: tuple[str, str] = ("fixed", "moving")) -> None:
    """Refuse a 2D image paired with a 3D one.

    Raises:
        GeometryError: The two images differ in spatial dimensions.
    """
    if a.spatial_dims != b.spatial_dims:
        raise GeometryError(
            f"{names[0]} image is {a.spatial_dims}D but {names[1]} image is {b.spatial_dims}D",
            path=b.meta.get("source"),
            fix="register images of the same dimensionality (extract a slice or stack the 2D image first)",
        )


def _components(tx: Any) -> list[Any]:
    """A transform's components in application order (the first maps the fixed point first)."""
    sitk = _sitk()
    if isinstance(tx, sitk.CompositeTransform):
        # ITK applies a composite's last-added transform first
        out: list[Any] = []
        for i in reversed(range(tx.GetNumberOfTransforms())):
            out.extend(_components(tx.GetNthTransform(i).Downcast()))
        return out
    return [tx.Downcast() if hasattr(tx, "Downcast") else tx]


def _copy_field(field: Any) -> Any:
    """A float64 vector copy (DisplacementFieldTransform takes its field image's buffer)."""
    sitk = _sitk()
    out = sitk.Cast(field, sitk.sitkVectorFloat64)
    return out if out is not field else sitk.Image(field)


class SpatialTransform:
    """A spatial mapping from fixed-space world points to moving-space world points (RAS+, mm).

    Build one with :meth:`identity`, :meth:`from_matrix`, :meth:`from_displacement`, :meth:`read`, or get one
    from a registration. ``grid`` is the image geometry a deformable transform was estimated on: its
    displacement fields and numerical inverse live there.

    Args:
        sitk_transform: The SimpleITK transform (LPS world).
        dims: Spatial dimensions, 2 or 3.
        grid: Reference geometry of a deformable transform (any image on the fixed grid), or None.
    """

    def __init__(self, sitk_transform: Any, *, dims: int, grid: Image | None = None) -> None:
        if dims not in (2, 3):
            raise InvalidArgumentError(f"a transform has 2 or 3 spatial dimensions, got {dims}")
        if sitk_transform.GetDimension() != dims:
            raise GeometryError(f"SimpleITK transform is {sitk_transform.GetDimension()}D, expected {dims}D")
        self._tx = sitk_transform
        self.dims = dims
        self.grid = None if grid is None else _grid_of(grid)

    # ------------------------------------------------------------ builders
    @classmethod
    def identity(cls, dims: int) -> SpatialTransform:
        """The identity mapping in ``dims`` dimensions."""
        return cls(_sitk().AffineTransform(dims), dims=dims)

    @classmethod
    def from_matrix(cls, matrix: Any) -> SpatialTransform:
        """A linear transform from a homogeneous RAS+ matrix, ``(4, 4)`` for 3D or ``(3, 3)`` for 2D.

        Raises:
            InvalidArgumentError: The matrix is not square homogeneous, finite and invertible.
        """
        m = np.asarray(matrix, dtype=float)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] not in (3, 4):
            raise InvalidArgumentError(f"a linear transform matrix is (3, 3) or (4, 4), got shape {m.shape}")
        d = m.shape[0] - 1
        if not np.isfinite(m).all() or not np.allclose(m[d], np.eye(d + 1)[d]) or abs(np.linalg.det(m[:d, :d])) < 1e-12:
            raise InvalidArgumentError("a linear transform matrix must be finite, homogeneous and invertible")
        f = _flip(d)
        lin = f[:, None] * m[:d, :d] * f[None, :]
        tx = _sitk().AffineTransform(d)
        tx.SetMatrix(tuple(float(v) for v in lin.ravel()))
        tx.SetTranslation(tuple(float(v) for v in f * m[:d, d]))
        return cls(tx, dims=d)

    @classmethod
    def from_displacement(cls, field: Image) -> SpatialTransform:
        """A dense transform ``T(x) = x + u(x)`` from a displacement field image.

        Args:
            field: An image with ``spatial_dims`` channels, the RAS+ world displacement in mm at each voxel.
                The grid of the field becomes the transform's ``grid``; outside it the displacement is zero.

        Raises:
            InvalidArgumentError: The channel count differs from the spatial dimensions.
        """
        if field.num_channels != field.spatial_dims:
            raise InvalidArgumentError(
                f"a displacement field needs {field.spatial_dims} channels (one per world axis), got "
                f"{field.num_channels}",
                path=field.meta.get("source"),
            )
        f = _flip(field.spatial_dims).reshape((-1,) + (1,) * field.spatial_dims)
        lps = field.with_array((field.array * f).astype(np.float64))
        sitk_field = _copy_field(to_sitk(lps))
        return cls(_sitk().DisplacementFieldTransform(sitk_field), dims=field.spatial_dims, grid=field)

    @classmethod
    def read(cls, path: str | PathLike[str]) -> SpatialTransform:
        """Load an ITK transform file or a displacement-field image (see the module docstring).

        Raises:
            ReadError: The file is missing or not a transform.
        """
        sitk = _sitk()
        p = Path(path)
        if not p.is_file():
            raise ReadError("no such transform file", path=p)
        name = p.name.lower()
        try:
            if name.endswith(_FIELD_SUFFIXES):
                field = sitk.ReadImage(str(p))
                if field.GetNumberOfComponentsPerPixel() != field.GetDimension():
                    raise ReadError(
                        f"image has {field.GetNumberOfComponentsPerPixel()} component(s) per voxel, not a "
                        f"{field.GetDimension()}D displacement field",
                        path=p,
                    )
                grid = from_sitk(sitk.VectorIndexSelectionCast(field, 0))
                return cls(sitk.DisplacementFieldTransform(_copy_field(field)), dims=field.GetDimension(), grid=grid)
            tx = sitk.ReadTransform(str(p))
        except RuntimeError as exc:
            raise ReadError(f"not a readable transform: {str(exc).strip().splitlines()[-1]}", path=p) from exc
        tx = tx.Downcast()
        return cls(tx, dims=tx.GetDimension())

    # ------------------------------------------------------------ queries
    @property
    def sitk(self) -> Any:
        """The underlying SimpleITK transform (LPS world)."""
        return self._tx

    @property
    def is_linear(self) -> bool:
        """Whether every component is linear (rigid, similarity, affine, ...)."""
        return all(c.GetName() in _LINEAR_NAMES for c in _components(self._tx))

    @property
    def matrix(self) -> np.ndarray:
        """Homogeneous RAS+ matrix of a linear transform, ``(dims + 1, dims + 1)``.

        Raises:
            InvalidArgumentError: The transform is not linear.
        """
        if not self.is_linear:
            raise InvalidArgumentError("only a linear transform has a matrix; this one is deformable")
        d = self.dims
        basis = np.vstack([np.zeros(d), np.eye(d)])
        mapped = self._map_lps(basis)
        m = np.eye(d + 1)
        m[:d, d] = mapped[0]
        m[:d, :d] = (mapped[1:] - mapped[0]).T
        f = np.ones(d + 1)
        f[:d] = _flip(d)
        return f[:, None] * m * f[None, :]

    def __repr__(self) -> str:
        kinds = "+".join(c.GetName().replace("Transform", "") for c in _components(self._tx))
        return f"SpatialTransform({self.dims}D, {kinds})"

    # ----------------------------------------------------------- mapping
    def _map_lps(self, points: np.ndarray) -> np.ndarray:
        tp = self._tx.TransformPoint
        return np.array([tp(tuple(float(v) for v in p)) for p in points], dtype=float).reshape(len(points), self.dims)

    def map_points(self, points: Any) -> np.ndarray:
        """Map world points (RAS+, mm) from fixed space to moving space.

        Args:
            points: ``(N, dims)`` or ``(N, 3)`` world points (a 2D transform uses the first two coordinates and
                keeps the third).

        Returns:
            The mapped points, same shape as given.
        """
        p = np.atleast_2d(np.asarray(points, dtype=float))
        if p.ndim != 2 or p.shape[1] not in (self.dims, 3):
            raise InvalidArgumentError(f"points must be (N, {self.dims}) or (N, 3), got shape {p.shape}")
        f = _flip(self.dims)
        out = p.copy()
        out[:, : self.dims] = self._map_lps(p[:, : self.dims] * f) * f
        return out

    def map_boxes(self, boxes: Any) -> np.ndarray:
        """Map axis-aligned world boxes ``(N, 2 * dims)`` (``min..., max...``, RAS+ mm): the box around each mapped box.

        Every corner of each box is mapped and the enclosing axis-aligned box is returned; to bring boxes drawn
        on the moving image into fixed space use ``transform.inverse().map_boxes(boxes)``.
        """
        b = np.atleast_2d(np.asarray(boxes, dtype=float))
        d = self.dims
        if b.ndim != 2 or b.shape[1] != 2 * d:
            raise InvalidArgumentError(f"boxes must be (N, {2 * d}) as min and max corners, got shape {b.shape}")
        if np.any(b[:, d:] < b[:, :d]):
            raise InvalidArgumentError("a box's max corner is below its min corner")
        corners = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T  # (2**d, d)
        out = np.empty_like(b)
        for i, box in enumerate(b):
            pts = np.where(corners == 0, box[:d], box[d:])
            mapped = self.map_points(pts)
            out[i, :d], out[i, d:] = mapped.min(0), mapped.max(0)
        return out

    def apply(
        self,
        image: Image,
        *,
        reference: Image,
        interpolation: Interpolation | None = None,
        default: float = 0.0,
    ) -> Image:
        """Warp a moving image onto the ``reference`` (fixed) grid.

        Args:
            image: The moving image (any number of channels).
            reference: Image whose grid (shape and affine) the result takes.
            interpolation: ``"linear"`` (default for intensities), ``"bspline"`` (cubic), or ``"nearest"`` (the
                only choice for label maps, which keep their dtype).
            default: Value outside the moving image.

        Returns:
            The warped image on the reference grid; intensities become float32.

        Raises:
            GeometryError: The image or reference has other dimensions than the transform.
            InvalidArgumentError: A label map with an interpolation other than nearest.
        """
        sitk = _sitk()
        for what, img in (("image", image), ("reference", reference)):
            if img.spatial_dims != self.dims:
                raise GeometryError(
                    f"{what} is {img.spatial_dims}D but the transform is {self.dims}D", path=img.meta.get("source")
                )
        if interpolation is None:
            interpolation = "nearest" if image.kind == "label" else "linear"
        interpolation = look_up_option(interpolation, ("linear", "bspline", "nearest"), what="interpolation")
        if image.kind == "label" and interpolation != "nearest":
            raise InvalidArgumentError(
                f"label maps are warped with nearest-neighbour interpolation, not {interpolation}",
                path=image.meta.get("source"),
            )
        interp = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}[
            interpolation
        ]
        ref = to_sitk(reference.with_array(np.zeros((1, *reference.spatial_shape), np.uint8), kind="label"))
        channels = []
        for c in range(image.num_channels):
            src = image.with_array(image.array[c : c + 1]) if image.num_channels > 1 else image
            moving = to_sitk(src if image.kind == "label" else src.with_array(src.array.astype(np.float32)))
            out = sitk.Resample(moving, ref, self._tx, interp, float(default), moving.GetPixelID())
            channels.append(from_sitk(out, kind=image.kind).array)
        array = np.concatenate(channels)
        return Image(
            array, reference.affine, kind=image.kind, meta={**image.meta, "warped_onto": reference.meta.get("source")}
        )

    def displacement(self, reference: Image | None = None) -> Image:
        """The dense displacement ``u(x) = T(x) - x`` on a grid, as an image of RAS+ world vectors in mm.

        Args:
            reference: Grid to sample on (default: the transform's ``grid``).

        Raises:
            InvalidArgumentError: No reference given and the transform has no grid.
        """
        sitk = _sitk()
        grid = self._grid(reference)
        flt = sitk.TransformToDisplacementFieldFilter()
        flt.SetReferenceImage(to_sitk(grid))
        flt.SetOutputPixelType(sitk.sitkVectorFloat64)
        field = from_sitk(flt.Execute(self._tx))
        f = _flip(self.dims).reshape((-1,) + (1,) * self.dims)
        return field.with_array((field.array * f).astype(np.float32))

    def _grid(self, reference: Image | None) -> Image:
        if reference is not None:
            if reference.spatial_dims != self.dims:
                raise GeometryError(f"reference is {reference.spatial_dims}D but the transform is {self.dims}D")
            return _grid_of(reference)
        if self.grid is None:
            raise InvalidArgumentError("this transform has no grid of its own; pass reference= (the fixed image)")
        return self.grid

    # -------------------------------------------------------- composition
    def then(self, other: SpatialTransform) -> SpatialTransform:
        """The transform that maps a point through ``self`` first, then through ``other``: ``x -> other(self(x))``.

        The result of a registration that ran ``affine`` first and then a deformable stage on the affinely
        resampled moving image is ``deformable.then(affine)``. Two linear transforms give one linear transform.
        """
        if other.dims != self.dims:
            raise GeometryError(f"cannot compose a {self.dims}D transform with a {other.dims}D one")
        grid = self.grid if self.grid is not None else other.grid
        if self.is_linear and other.is_linear:
            return SpatialTransform.from_matrix(other.matrix @ self.matrix)
        sitk = _sitk()
        parts = [*_components(self._tx), *_components(other._tx)]
        composite = sitk.CompositeTransform(self.dims)
        for part in reversed(parts):  # the last added is applied first
            composite.AddTransform(part)
        return SpatialTransform(composite, dims=self.dims, grid=grid)

    def inverse(
        self, *, reference: Image | None = None, iterations: int = 50, tolerance_mm: float = 0.01
    ) -> SpatialTransform:
        """The inverse mapping (moving space to fixed space).

        Linear components are inverted exactly. Dense and B-spline components are sampled as a displacement field
        on their own grid (a displacement-field transform) or ``reference`` (a B-spline), and inverted by ITK's
        fixed-point iteration (``InvertDisplacementFieldImageFilter``).

        Args:
            reference: Grid for deformable components that carry none (default: the transform's ``grid``).
            iterations: Maximum fixed-point iterations of the numerical inversion.
            tolerance_mm: Stop when the largest inversion error is below this (mm).
        """
        sitk = _sitk()
        inverted = []
        for part in reversed(_components(self._tx)):
            name = part.GetName()
            if name in _LINEAR_NAMES:
                inverted.append(SpatialTransform(part.GetInverse(), dims=self.dims).matrix)
                continue
            if name == "DisplacementFieldTransform":
                field = part.GetDisplacementField()
            else:
                flt = sitk.TransformToDisplacementFieldFilter()
                flt.SetReferenceImage(to_sitk(self._grid(reference)))
                flt.SetOutputPixelType(sitk.sitkVectorFloat64)
                field = flt.Execute(part)
            inv = sitk.InvertDisplacementField(
                field,
                maximumNumberOfIterations=int(iterations),
                maxErrorToleranceThreshold=float(tolerance_mm),
                meanErrorToleranceThreshold=float(tolerance_mm) / 10,
                enforceBoundaryCondition=True,
            )
            inverted.append(SpatialTransform(sitk.DisplacementFieldTransform(inv), dims=self.dims))
        out = SpatialTransform.identity(self.dims)
        for part_inv in inverted:
            out = out.then(SpatialTransform.from_matrix(part_inv) if isinstance(part_inv, np.ndarray) else part_inv)
        out.grid = self.grid
        return out

    # ---------------------------------------------------------------- files
    def save(self, path: str | PathLike[str], *, reference: Image | None = None) -> Path:
        """Write an ITK transform file, or a displacement-field image for a ``.nii.gz``/``.nrrd``/``.mha`` path.

        Args:
            path: Destination; the suffix chooses the format (see the module docstring).
            reference: Grid of a displacement-field file (default: the transform's ``grid``).

        Raises:
            WriteError: The suffix names no transform format or the transform cannot be stored in it.
        """
        sitk = _sitk()
        p = Path(path)
        name = p.name.lower()
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(_FIELD_SUFFIXES):
            field = self.displacement(reference)
            f = _flip(self.dims).reshape((-1,) + (1,) * self.dims)
            sitk.WriteImage(to_sitk(field.with_array(field.array * f)), str(p), True)
            return p
        if not name.endswith(_TRANSFORM_SUFFIXES):
            raise WriteError(
                "unknown transform file suffix",
                path=p,
                fix=f"use one of {', '.join(_TRANSFORM_SUFFIXES + _FIELD_SUFFIXES)}",
            )
        try:
            sitk.WriteTransform(self._tx, str(p))
        except RuntimeError as exc:
            raise WriteError(
                f"ITK cannot store this transform in {p.suffix} files: {str(exc).strip().splitlines()[-1]}",
                path=p,
                fix="save composite and dense transforms as .h5",
            ) from exc
        return p


def _grid_of(image: Image) -> Image:
    """A one-channel uint8 image holding only ``image``'s geometry (cheap to keep and to convert)."""
    return Image(np.zeros((1, *image.spatial_shape), np.uint8), image.affine, kind="label")


def corners_world(image: Image) -> np.ndarray:
    """World positions (RAS+, mm) of the outer corners of an image's voxel grid, ``(2**dims, 3)``."""
    d = image.spatial_dims
    shape = np.array(image.spatial_shape, float)
    corners = np.array(np.meshgrid(*[[0, 1]] * d, indexing="ij")).reshape(d, -1).T
    return image.voxel_to_world(np.where(corners == 0, -0.5, shape - 0.5))


def world_bounds(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned world bounding box (RAS+, mm) of an image's field of view: ``(min, max)`` over ``dims`` axes."""
    c = corners_world(image)[:, : image.spatial_dims]
    return c.min(0), c.max(0)


def points_from_file(path: str | PathLike[str], *, dims: Sequence[int] = (2, 3)) -> np.ndarray:
    """Read landmarks from a CSV or whitespace text file: one point per row, world RAS+ mm (a header row is skipped).

    Raises:
        ReadError: The file is missing, empty, or its rows are not 2 or 3 numbers.
    """
    p = Path(path)
    if not p.is_file():
        raise ReadError("no such landmark file", path=p)
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        parts = [v for v in line.replace(",", " ").replace(";", " ").split() if v]
        if not parts:
            continue
        try:
            rows.append([float(v) for v in parts])
        except ValueError:
            if rows:
                raise ReadError(f"row {line!r} is not numbers", path=p) from None
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) not in dims:
        raise ReadError("landmark file must hold rows of 2 or 3 numbers (x, y[, z] in RAS+ mm)", path=p)
    return np.asarray(rows, dtype=float)
