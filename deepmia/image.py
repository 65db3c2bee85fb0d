"""The :class:`Image` object: a channel-first array plus the affine that places it in the world.

Conventions (see DESIGN.md):

* ``array`` is channel first: ``(C, X, Y)`` for 2D images and ``(C, X, Y, Z)`` for volumes.
* ``affine`` is a 4x4 matrix mapping voxel indices ``(i, j, k, 1)`` to world millimetres in RAS+
  (the NIfTI / nibabel convention). For 2D images the third column is the slice normal (1 mm).
* Spacing, origin, direction and orientation are derived from the affine, never stored twice.
* ``kind`` is ``"intensity"`` or ``"label"``; label arrays are always integral.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from deepmia.errors import GeometryError, InvalidArgumentError

__all__ = ["Image", "Kind", "LPS_TO_RAS", "affine_from_geometry", "axcodes"]

Kind = Literal["intensity", "label"]

#: Flips x and y: converts an LPS (DICOM / ITK) world affine to RAS+ and back (it is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_geometry(
    spacing: Any, origin: Any = (0.0, 0.0, 0.0), direction: Any | None = None
) -> np.ndarray:
    """Build a 4x4 affine from spacing (mm), origin (mm) and a direction matrix (columns are axes).

    All three are in the same world convention; this function converts nothing. Missing trailing
    entries (2D geometry) are filled with 1 mm spacing, 0 origin and the identity direction.
    """
    spacing = np.ones(3) if spacing is None else np.asarray(spacing, dtype=float)
    origin = np.asarray(origin, dtype=float)
    sp = np.ones(3)
    sp[: spacing.size] = spacing
    org = np.zeros(3)
    org[: origin.size] = origin
    d = np.eye(3)
    if direction is not None:
        direction = np.asarray(direction, dtype=float)
        n = int(round(np.sqrt(direction.size)))
        d[:n, :n] = direction.reshape(n, n)
    affine = np.eye(4)
    affine[:3, :3] = d * sp[None, :]
    affine[:3, 3] = org
    return affine


def axcodes(affine: np.ndarray) -> str:
    """Orientation code of an RAS+ affine, e.g. ``"RAS"`` or ``"LPS"`` (closest axis for oblique ones)."""
    import nibabel.orientations as nio

    return "".join(nio.aff2axcodes(affine))


def _check_affine(affine: Any) -> np.ndarray:
    a = np.array(affine, dtype=np.float64)  # a copy: the Image makes it read-only, never the caller's array
    if a.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {a.shape}")
    # plain-float checks on 16 numbers: a few microseconds, versus ~25 us through numpy's small-array calls
    rows = a.tolist()
    if not all(math.isfinite(v) for row in rows for v in row):
        raise GeometryError("affine contains NaN or infinite values; the geometry cannot be trusted")
    if any(abs(v - w) > 1e-8 + 1e-5 * w for v, w in zip(rows[3], (0.0, 0.0, 0.0, 1.0), strict=True)):  # allclose
        raise GeometryError(f"affine's last row must be [0, 0, 0, 1], got {rows[3]}")
    (m00, m01, m02, _), (m10, m11, m12, _), (m20, m21, m22, _) = rows[:3]
    norms = [math.hypot(m00, m10, m20), math.hypot(m01, m11, m21), math.hypot(m02, m12, m22)]
    det = m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
    if min(norms) == 0 or abs(det) < 1e-12 * max(norms[0] * norms[1] * norms[2], 1e-300):
        raise GeometryError(
            f"affine is singular (voxel axis lengths {[round(n, 6) for n in norms]} mm); the geometry cannot be trusted"
        )
    return a


def _check_array(array: Any, kind: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise InvalidArgumentError(
            f"Image array must be channel first, (C, X, Y) or (C, X, Y, Z); got {array.ndim} dimensions "
            f"with shape {array.shape}. Add a channel axis with array[None]."
        )
    if kind not in ("intensity", "label"):
        raise InvalidArgumentError(f"kind must be 'intensity' or 'label', got {kind!r}")
    if kind == "label" and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InvalidArgumentError(
            f"a label image must have an integer dtype, got {array.dtype}; convert explicitly with astype()"
        )
    return array


class Image:
    """A medical image: channel-first pixels, a RAS+ affine, a kind, and metadata.

    Args:
        array: Channel-first pixels, ``(C, X, Y)`` or ``(C, X, Y, Z)``.
        affine: 4x4 voxel-to-world (RAS+, mm) matrix. Defaults to the identity (1 mm voxels at the origin).
        kind: ``"intensity"`` or ``"label"``. Label arrays must be integral (or boolean).
        meta: Free-form metadata (modality, pseudonymous patient id, UIDs, source path, ...).

    Raises:
        InvalidArgumentError: The array does not have 3 or 4 dimensions, or a label array is not integral.
        GeometryError: The affine is not a finite, invertible 4x4 matrix.

    Example:
        >>> import numpy as np
        >>> img = Image(np.zeros((1, 4, 5, 6), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
        >>> img.spacing
        (2.0, 2.0, 3.0)
        >>> img.orientation
        'RAS'
    """

    __slots__ = ("_array", "_affine", "kind", "meta")

    def __init__(
        self,
        array: np.ndarray,
        affine: np.ndarray | None = None,
        *,
        kind: Kind = "intensity",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self._array = _check_array(array, kind)
        self._affine = _check_affine(np.eye(4) if affine is None else affine)
        self._affine.setflags(write=False)
        self.kind: Kind = kind
        self.meta: dict[str, Any] = dict(meta or {})

    @classmethod
    def _same_affine(cls, array: np.ndarray, source: Image, kind: Kind, meta: Mapping[str, Any]) -> Image:
        """Internal fast path: a new image on ``source``'s already validated, read-only affine (not re-checked)."""
        new = object.__new__(cls)
        new._array = _check_array(array, kind)
        new._affine = source._affine
        new.kind = kind
        new.meta = dict(meta)
        return new

    @classmethod
    def _derived(cls, array: np.ndarray, source: Image, affine: np.ndarray) -> Image:
        """Internal fast path: a new image of ``source``'s kind and meta on an affine derived from its affine.

        ``affine`` must be a fresh float64 4x4 array computed from ``source``'s validated affine by a voxel
        translation, a positive per-axis scaling or an axis permutation/flip, which keep it finite with the last row
        ``[0, 0, 0, 1]`` and invertible, so it is frozen without being checked again (spatial steps call this).
        """
        new = object.__new__(cls)
        new._array = _check_array(array, source.kind)
        affine.setflags(write=False)
        new._affine = affine
        new.kind = source.kind
        new.meta = dict(source.meta)
        return new

    # ------------------------------------------------------------------ data
    @property
    def array(self) -> np.ndarray:
        """Channel-first pixel array, ``(C, X, Y)`` or ``(C, X, Y, Z)``."""
        return self._array

    @property
    def affine(self) -> np.ndarray:
        """Read-only 4x4 voxel-to-world matrix, RAS+, millimetres."""
        return self._affine

    @property
    def spatial_dims(self) -> int:
        """Number of spatial dimensions: 2 or 3."""
        return self._array.ndim - 1

    @property
    def num_channels(self) -> int:
        """Number of channels (the first array axis)."""
        return int(self._array.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Full array shape, channel first."""
        return tuple(int(s) for s in self._array.shape)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Array shape without the channel axis."""
        return self.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        """Pixel data type."""
        return self._array.dtype

    @property
    def nbytes(self) -> int:
        """Memory held by the pixel array, in bytes."""
        return int(self._array.nbytes)

    # -------------------------------------------------------------- geometry
    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel spacing in mm along each spatial axis (length ``spatial_dims``)."""
        # the sum of squares in np.linalg.norm's order, on plain floats: 1 us instead of 6 us
        (m00, m01, m02, _), (m10, m11, m12, _), (m20, m21, m22, _) = self._affine[:3].tolist()
        norms = (
            math.sqrt(m00 * m00 + m10 * m10 + m20 * m20),
            math.sqrt(m01 * m01 + m11 * m11 + m21 * m21),
            math.sqrt(m02 * m02 + m12 * m12 + m22 * m22),
        )
        return norms[: self._array.ndim - 1]

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position (RAS+, mm) of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self._affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit world directions (RAS+) of the voxel axes."""
        m = self._affine[:3, :3]
        return m / np.linalg.norm(m, axis=0, keepdims=True)

    @property
    def orientation(self) -> str:
        """Three-letter RAS+ orientation code of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return axcodes(self._affine)

    @property
    def is_oblique(self) -> bool:
        """Whether any voxel axis is not aligned with a world axis (beyond 1e-4 in direction cosines)."""
        d = np.abs(self.direction)
        return bool(np.any((d > 1e-4) & (d < 1 - 1e-4)))

    def voxel_to_world(self, points: Any) -> np.ndarray:
        """Map voxel indices ``(N, 3)`` (or ``(N, 2)`` for 2D) to world RAS+ mm ``(N, 3)``."""
        p = np.atleast_2d(np.asarray(points, dtype=float))
        full = np.zeros((p.shape[0], 3))
        full[:, : p.shape[1]] = p
        return full @ self._affine[:3, :3].T + self._affine[:3, 3]

    def world_to_voxel(self, points: Any) -> np.ndarray:
        """Map world RAS+ mm points ``(N, 3)`` to continuous voxel indices ``(N, spatial_dims)``."""
        p = np.atleast_2d(np.asarray(points, dtype=float))
        inv = np.linalg.inv(self._affine)
        return (p @ inv[:3, :3].T + inv[:3, 3])[:, : self.spatial_dims]

    @property
    def lps_affine(self) -> np.ndarray:
        """The affine in the LPS world convention used by DICOM and ITK."""
        return LPS_TO_RAS @ self._affine

    # ------------------------------------------------------------- builders
    def with_array(self, array: np.ndarray, *, kind: Kind | None = None) -> Image:
        """A new image with the same geometry and meta, holding ``array`` (same spatial shape)."""
        array = np.asarray(array)
        if array.shape[1:] != self._array.shape[1:]:
            raise InvalidArgumentError(
                f"with_array keeps the geometry, so the spatial shape must stay {self.spatial_shape}, "
                f"got {array.shape[1:]}; use a geometry-changing function instead"
            )
        return Image._same_affine(array, self, kind or self.kind, self.meta)

    def with_geometry(self, array: np.ndarray, affine: np.ndarray) -> Image:
        """A new image of the same kind and meta with new pixels and a new affine."""
        return Image(array, affine, kind=self.kind, meta=self.meta)

    def copy(self) -> Image:
        """A deep copy (pixels, affine and meta)."""
        import copy

        return Image(self._array.copy(), self._affine.copy(), kind=self.kind, meta=copy.deepcopy(self.meta))

    def same_geometry(self, other: Image, *, atol: float = 1e-3) -> bool:
        """Whether ``other`` has the same spatial shape and an affine within ``atol`` mm."""
        return self.spatial_shape == other.spatial_shape and bool(np.allclose(self._affine, other._affine, atol=atol))

    # -------------------------------------------------------------- display
    def summary(self) -> dict[str, Any]:
        """Plain-data description for ``deepmia info --json`` and reports."""
        arr = self._array
        finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
        return {
            "shape": list(self.shape),
            "spatial_dims": self.spatial_dims,
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "origin_mm": [round(o, 6) for o in self.origin],
            "orientation": self.orientation,
            "oblique": self.is_oblique,
            "dtype": str(arr.dtype),
            "kind": self.kind,
            "modality": self.meta.get("modality"),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "affine": np.round(self._affine, 6).tolist(),
        }

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        mem = self.nbytes
        unit = "B"
        for unit in ("B", "KiB", "MiB", "GiB"):
            if mem < 1024 or unit == "GiB":
                break
            mem /= 1024
        return (
            f"Image(shape={self.shape}, spacing=({sp}) mm, orientation={self.orientation}, "
            f"dtype={self.dtype}, kind={self.kind}, memory={mem:.1f} {unit})"
        )
