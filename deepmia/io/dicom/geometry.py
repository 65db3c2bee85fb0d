"""Geometry of DICOM frames: sorting slices, checking they form a volume, building the RAS+ affine.

Every image frame (a single-frame file, or one frame of a multi-frame object) is a :class:`FramePlane`: where its
first pixel is (ImagePositionPatient, LPS mm), how its rows and columns run (ImageOrientationPatient) and its
pixel spacing. :func:`stack_geometry` sorts the frames along the slice normal (the cross product of the row and
column directions), groups frames at the same position (time points, diffusion directions, echoes: they become
channels) and refuses, with a :class:`~deepmia.errors.GeometryError` naming the problem, anything that is not one
regular volume: mixed orientations or image sizes, gantry tilt, missing or unevenly spaced slices, a localizer
mixed in, a stack of images all at one position. :func:`resample_to_regular` puts a tilted or unevenly spaced
stack onto a regular grid, only when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import GeometryError, SeriesError
from deepmia.image import LPS_TO_RAS

__all__ = ["FramePlane", "StackGeometry", "stack_geometry", "resample_to_regular"]

#: Direction cosines that differ by less than this are the same orientation.
ORIENTATION_TOL = 1e-4
#: Positions closer than this along the normal (mm) are the same slice position.
POSITION_TOL = 0.01


@dataclass
class FramePlane:
    """Where one image frame lies: LPS position of its first pixel, row/column directions, spacing (mm)."""

    position: np.ndarray | None
    orientation: np.ndarray | None  # 6 direction cosines: along a row, then down a column
    spacing: tuple[float, float] | None  # (between rows, between columns), as PixelSpacing
    rows: int
    columns: int
    source: str
    order: tuple[Any, ...] = ()  # sort key among frames at the same position (time, echo, instance, ...)
    image_type: str = ""
    series_number: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StackGeometry:
    """The result of :func:`stack_geometry`: frame order, volume shape and affine.

    Attributes:
        order: Indices into the input frames, shaped ``(channels, slices)``.
        affine: 4x4 RAS+ affine of the volume (regular grid).
        positions: Distance of each slice along the normal (mm), sorted.
        regular: False when the stack needs resampling (tilt or uneven spacing); ``problem`` says why.
        problem: What is irregular, for the error message or the resampling record.
        normal: Unit slice normal (LPS).
        slice_offsets: LPS position of each slice's first pixel, sorted (``(slices, 3)``).
    """

    order: np.ndarray
    affine: np.ndarray
    positions: np.ndarray
    regular: bool = True
    problem: str = ""
    normal: np.ndarray | None = None
    slice_offsets: np.ndarray | None = None


def _frame_axes(iop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = iop[:3] / np.linalg.norm(iop[:3])
    col = iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def _lps_affine(row: np.ndarray, col: np.ndarray, step: np.ndarray, spacing: tuple[float, float], origin) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, 0] = row * spacing[1]  # i runs along a row: columns are PixelSpacing[1] apart
    lps[:3, 1] = col * spacing[0]  # j runs down a column: rows are PixelSpacing[0] apart
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def _describe(frames: Sequence[FramePlane], idx: Sequence[int], limit: int = 3) -> str:
    names = sorted({Path(frames[i].source).name for i in idx})
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_uniform(frames: Sequence[FramePlane], where: str) -> None:
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        sizes.setdefault((f.rows, f.columns), []).append(i)
    if len(sizes) > 1:
        parts = "; ".join(f"{r}x{c}: {len(ix)} images ({_describe(frames, ix)})" for (r, c), ix in sizes.items())
        raise SeriesError(
            f"mixed image sizes in one series ({parts}); they cannot be stacked into one volume",
            path=where,
            fix="remove the images that do not belong, or read them one file at a time",
        )


def _check_orientation(frames: Sequence[FramePlane], where: str) -> np.ndarray:
    first = np.asarray(frames[0].orientation, dtype=float)
    if np.allclose(np.array([f.orientation for f in frames], dtype=float), first, atol=ORIENTATION_TOL):
        return first  # the usual case, checked at once
    groups: list[tuple[np.ndarray, list[int]]] = []
    for i, f in enumerate(frames):
        for iop, members in groups:
            if np.allclose(iop, f.orientation, atol=ORIENTATION_TOL):
                members.append(i)
                break
        else:
            groups.append((np.asarray(f.orientation, dtype=float), [i]))
    if len(groups) == 1:
        return groups[0][0]
    groups.sort(key=lambda g: -len(g[1]))
    localizers = [
        i for _, members in groups[1:] for i in members if "LOCALIZER" in frames[i].image_type.upper()
    ]
    minority = [i for _, members in groups[1:] for i in members]
    if localizers or (len(minority) <= 3 and len(groups[0][1]) >= 3 * len(minority)):
        raise SeriesError(
            f"a localizer (scout) is mixed into the series: {_describe(frames, minority)} "
            f"({frames[minority[0]].image_type or 'other orientation'}) lies in another plane than the other "
            f"{len(groups[0][1])} images",
            path=where,
            fix="remove the localizer images from the folder, or pass the slice files explicitly",
        )
    parts = "; ".join(
        f"{np.round(iop, 4).tolist()}: {len(m)} images ({_describe(frames, m)})" for iop, m in groups
    )
    raise GeometryError(
        f"mixed slice orientations in one series ({parts}); this is not one volume",
        path=where,
        fix="split the files by orientation and read each stack separately",
    )


def stack_geometry(frames: Sequence[FramePlane], *, where: str, min_slices: int = 3) -> StackGeometry:
    """Sort ``frames`` into a volume (with channels for repeated positions) and build its RAS+ affine.

    Args:
        frames: The frames of one series (or one multi-frame object).
        where: The folder or file, for error messages.
        min_slices: Fewest slices a multi-slice volume may have; with fewer the spacing cannot be
            cross-checked (a single frame is always accepted as a one-slice image, and so are fewer positions
            when every position holds the same number (two or more) of repeated acquisitions).

    Raises:
        SeriesError: Mixed image sizes, a localizer mixed in.
        GeometryError: Missing geometry, mixed orientations, a stack of images all at one position,
            too few slices, repeated positions with uneven counts. Tilt and uneven spacing do not raise here:
            the result has ``regular=False`` and ``problem`` set (the caller refuses or resamples).
    """
    _check_uniform(frames, where)
    if any(f.position is None or f.orientation is None or f.spacing is None for f in frames):
        missing = [i for i, f in enumerate(frames) if f.position is None or f.orientation is None or f.spacing is None]
        raise GeometryError(
            f"no patient geometry (ImagePositionPatient/ImageOrientationPatient missing, or PixelSpacing missing or "
            f"zero) in "
            f"{_describe(frames, missing)}; the images cannot be placed in space",
            path=where,
            fix="read the file alone to get its pixels on an identity grid",
        )
    iop = _check_orientation(frames, where)
    row, col, normal = _frame_axes(iop)
    spacing = frames[0].spacing
    pos = np.array([f.position for f in frames], dtype=float)
    dist = pos @ normal
    # Group frames at the same position along the normal.
    order = np.argsort(dist, kind="stable")
    groups: list[list[int]] = [[int(order[0])]]
    for i in order[1:]:
        if abs(dist[i] - dist[groups[-1][0]]) <= POSITION_TOL:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    n_slices = len(groups)
    counts = {len(g) for g in groups}
    if len(frames) > 1 and n_slices == 1:
        raise GeometryError(
            f"not a volume: all {len(frames)} images lie at the same position "
            f"({np.round(pos[0], 3).tolist()} mm, LPS); a repeated single slice cannot be stacked",
            path=where,
            fix="read the files one at a time",
        )
    if len(counts) > 1:
        detail = ", ".join(f"{dist[g[0]]:.2f} mm: {len(g)}" for g in groups)
        raise GeometryError(
            f"uneven number of images per slice position ({detail}); a time point or direction is incomplete",
            path=where,
            fix="check the series is complete",
        )
    # Two positions each repeated alike (time points, directions) are a deliberate thin slab, not a localizer or
    # an incomplete series: it is accepted, though its one spacing cannot be cross-checked.
    repeated = len(frames) >= 2 * n_slices
    if 1 < n_slices < min_slices and not repeated:
        raise GeometryError(
            f"only {n_slices} slice positions: too few to check the slice spacing (a localizer or an "
            "incomplete series?)",
            path=where,
            fix="read the files one at a time",
        )
    for g in groups:
        g.sort(key=lambda i: frames[i].order)
    idx = np.array(groups, dtype=np.int64).T  # (channels, slices)
    first = idx[0]
    slice_pos = pos[first]
    dist_sorted = dist[first]
    if n_slices == 1:
        thickness = float(frames[first[0]].extra.get("slice_spacing") or 1.0)
        affine = _lps_affine(row, col, normal * thickness, spacing, slice_pos[0])
        return StackGeometry(idx, affine, dist_sorted, normal=normal, slice_offsets=slice_pos)
    steps = np.diff(dist_sorted)
    step = float(np.median(steps))
    problems = []
    deltas = slice_pos - slice_pos[0]
    lateral = deltas - np.outer(deltas @ normal, normal)
    lateral_mm = np.linalg.norm(lateral, axis=1)
    if np.max(lateral_mm) > POSITION_TOL + 1e-3 * np.max(np.abs(deltas @ normal)):
        k = int(np.argmax(lateral_mm))
        angle = float(np.degrees(np.arctan2(lateral_mm[k], abs(deltas[k] @ normal))))
        problems.append(
            f"gantry tilt: slice positions are not along the slice normal (sheared by {angle:.2f} degrees)"
        )
    tol = max(POSITION_TOL * 2, 0.01 * step)
    if np.any(np.abs(steps - step) > tol):
        rounded = sorted({round(float(s), 3) for s in steps})
        gaps = int(np.sum(steps > step + tol))
        what = f"{gaps} missing slice(s) or " if gaps else ""
        problems.append(f"{what}uneven slice spacing (spacings {rounded} mm, expected {step:.3f} mm)")
    affine = _lps_affine(row, col, normal * step, spacing, slice_pos[0])
    return StackGeometry(
        idx, affine, dist_sorted, regular=not problems, problem="; ".join(problems), normal=normal,
        slice_offsets=slice_pos,
    )


def resample_to_regular(volume: np.ndarray, geom: StackGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Resample a tilted and/or unevenly spaced stack onto a regular grid perpendicular to the slices.

    Each source slice is shifted in plane (linear interpolation) to the target grid, then values are
    interpolated linearly along the normal between the two nearest source slices. The target grid keeps the
    in-plane axes and the first slice's origin; its slice spacing is the median source spacing. Points outside
    the source slices take the volume's minimum value.

    Args:
        volume: ``(C, X, Y, Z)`` with slices sorted along the normal.
        geom: The stack geometry (its ``affine`` already has the median spacing along the normal).

    Returns:
        The resampled float32 volume and its RAS+ affine.
    """
    from scipy import ndimage

    lps = LPS_TO_RAS @ geom.affine
    ax_i, ax_j, step_vec = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    step = float(np.linalg.norm(step_vec))
    normal = step_vec / step
    origin = geom.slice_offsets[0]
    dist = geom.positions - geom.positions[0]
    n_out = int(np.floor(dist[-1] / step + 1e-6)) + 1
    fill = float(volume.min())
    src = volume.astype(np.float32, copy=False)
    # In-plane shift of each source slice relative to the target grid (in voxels along i and j).
    deltas = geom.slice_offsets - origin
    lateral = deltas - np.outer(deltas @ normal, normal)
    shift_i = lateral @ ax_i / (ax_i @ ax_i)
    shift_j = lateral @ ax_j / (ax_j @ ax_j)
    shifted = np.empty_like(src)
    for z in range(src.shape[-1]):
        for c in range(src.shape[0]):
            if abs(shift_i[z]) < 1e-6 and abs(shift_j[z]) < 1e-6:
                shifted[c, :, :, z] = src[c, :, :, z]
            else:
                ndimage.shift(
                    src[c, :, :, z], (shift_i[z], shift_j[z]), output=shifted[c, :, :, z], order=1, mode="constant",
                    cval=fill,
                )
    out = np.empty(src.shape[:3] + (n_out,), dtype=np.float32)
    for k in range(n_out):
        d = k * step
        hi = min(int(np.searchsorted(dist, d - 1e-6)), len(dist) - 1)
        if hi == 0 or abs(dist[hi] - d) < 1e-6:
            out[..., k] = shifted[..., hi]
            continue
        lo = hi - 1
        w = (d - dist[lo]) / (dist[hi] - dist[lo])
        out[..., k] = (1 - w) * shifted[..., lo] + w * shifted[..., hi]
    affine = _lps_affine(
        ax_i / np.linalg.norm(ax_i), ax_j / np.linalg.norm(ax_j), step_vec,
        (float(np.linalg.norm(ax_j)), float(np.linalg.norm(ax_i))), origin,
    )
    return out, affine
