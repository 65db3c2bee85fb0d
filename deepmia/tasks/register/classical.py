"""Classical registration with SimpleITK: rigid, affine, and deformable (demons or B-spline) after affine.

Every method starts from a centre-of-mass (image moments) initialisation and runs over a multi-resolution
pyramid. Linear and B-spline stages optimise mean squares (``"mse"``), normalised cross-correlation (``"ncc"``)
or Mattes mutual information (``"mi"``, for different modalities), optionally inside fixed and moving masks.
The deformable default is multi-resolution symmetric-forces demons (Thirion / Vercauteren), which assumes the
two images share an intensity scale: the moving image is histogram-matched to the fixed one first.

Input is checked before any work (typed errors): 2D paired with 3D, no world-space overlap, a label map or mask
whose geometry differs from its image. After the run the chosen metric is measured on the whole fixed grid
(or mask) before and after; a result worse than the start is a :class:`RegistrationDivergedError`, never a
result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from deepmia._validate import look_up_option
from deepmia.errors import DeepmiaError, GeometryError, InvalidArgumentError
from deepmia.image import Image
from deepmia.io.sitk import to_sitk
from deepmia.processing.spatial_transform import SpatialTransform, check_same_dims, world_bounds

__all__ = [
    "METHODS",
    "METRICS",
    "DEFORMABLE",
    "RegistrationDivergedError",
    "RegistrationResult",
    "check_pair",
    "rescale_intensities",
    "similarity",
    "register_images",
]

Method = Literal["rigid", "affine", "deformable"]
Metric = Literal["mse", "ncc", "mi"]
METHODS = ("rigid", "affine", "deformable")
METRICS = ("mse", "ncc", "mi")
DEFORMABLE = ("demons", "diffeomorphic-demons", "bspline")


class RegistrationDivergedError(DeepmiaError):
    """A registration ended with a similarity worse than where it started; its result is not used."""


@dataclass
class RegistrationResult:
    """What a registration produced.

    Attributes:
        transform: Fixed-to-moving mapping (see :class:`~deepmia.processing.spatial_transform.SpatialTransform`).
        method: ``rigid``, ``affine``, ``deformable`` or ``learned``.
        metric: Similarity measure used to judge the result.
        metric_before: Its value with the identity transform (higher is better; MSE is negated).
        metric_after: Its value with ``transform``.
        seconds: Wall time of the whole registration.
        stages: Per stage: name, seconds and metric value after it.
    """

    transform: SpatialTransform
    method: str
    metric: str
    metric_before: float
    metric_after: float
    seconds: float
    stages: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain data for ``registration.json``."""
        return {
            "method": self.method,
            "metric": self.metric,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "seconds": round(self.seconds, 3),
            "stages": self.stages,
            "transform": repr(self.transform),
        }


def _sitk():
    import SimpleITK as sitk

    return sitk


# ----------------------------------------------------------------- input checks
def check_pair(
    fixed: Image,
    moving: Image,
    *,
    moving_label: Image | None = None,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
) -> None:
    """Refuse pairs that cannot be registered, before any work.

    Raises:
        GeometryError: 2D with 3D; the fields of view do not overlap in world space; a label map or mask whose
            geometry (shape and affine) differs from its image.
        InvalidArgumentError: An image has more than one channel, or a label map/mask is not a label image.
    """
    check_same_dims(fixed, moving)
    for what, img in (("fixed", fixed), ("moving", moving)):
        if img.num_channels != 1:
            raise InvalidArgumentError(
                f"{what} image has {img.num_channels} channels; registration uses one",
                path=img.meta.get("source"),
                fix="select a channel first",
            )
    lo_f, hi_f = world_bounds(fixed)
    lo_m, hi_m = world_bounds(moving)
    if np.any(hi_f <= lo_m) or np.any(hi_m <= lo_f):
        raise GeometryError(
            f"fixed and moving images do not overlap in world space (fixed spans {np.round(lo_f, 1).tolist()} to "
            f"{np.round(hi_f, 1).tolist()} mm, moving {np.round(lo_m, 1).tolist()} to {np.round(hi_m, 1).tolist()} mm)",
            path=moving.meta.get("source"),
            fix="check that both files carry real scanner geometry, or set a common origin first",
        )
    for what, extra, image in (
        ("moving label", moving_label, moving),
        ("fixed mask", fixed_mask, fixed),
        ("moving mask", moving_mask, moving),
    ):
        if extra is None:
            continue
        if extra.kind != "label":
            raise InvalidArgumentError(f"{what} must be a label image", path=extra.meta.get("source"))
        if not extra.same_geometry(image):
            same_dims = extra.spatial_dims == image.spatial_dims
            diff = f"{float(np.abs(extra.affine - image.affine).max()):.3g}" if same_dims else "n/a"
            raise GeometryError(
                f"{what} geometry differs from its image: shape {extra.spatial_shape} vs {image.spatial_shape}, "
                f"max affine difference {diff} mm",
                path=extra.meta.get("source"),
                fix="give the label map or mask that was drawn on this image (same grid)",
            )


# ----------------------------------------------------------------- similarity
def rescale_intensities(image: Image, *, percentiles: tuple[float, float] = (0.5, 99.5)) -> Image:
    """Map intensities linearly so the given percentiles become 0 and 1 (clipped), as float32."""
    a = image.array.astype(np.float32)
    lo, hi = np.percentile(a, percentiles)
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    return image.with_array(np.clip((a - np.float32(lo)) * np.float32(scale), 0.0, 1.0).astype(np.float32))


def similarity(fixed: np.ndarray, warped: np.ndarray, metric: Metric, *, mask: np.ndarray | None = None) -> float:
    """Similarity of two arrays on one grid, higher is better: ``-MSE``, NCC, or mutual information (nats).

    Mutual information uses a 32-bin joint histogram of the values inside ``mask``.
    """
    metric = look_up_option(metric, METRICS, what="metric")  # type: ignore[assignment]
    a = np.asarray(fixed, dtype=np.float64).ravel()
    b = np.asarray(warped, dtype=np.float64).ravel()
    if mask is not None:
        m = np.asarray(mask, bool).ravel()
        a, b = a[m], b[m]
    if metric == "mse":
        return -float(np.mean((a - b) ** 2))
    if metric == "ncc":
        a0, b0 = a - a.mean(), b - b.mean()
        denom = np.sqrt((a0**2).sum() * (b0**2).sum())
        return float((a0 * b0).sum() / denom) if denom > 0 else 0.0
    joint, _, _ = np.histogram2d(a, b, bins=32)
    p = joint / joint.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


# ------------------------------------------------------------- linear stages
def _set_metric(reg: Any, metric: str, fixed: Any, *, seed: int, samples: int, shrink: tuple[int, ...]) -> None:
    """Set the metric, with random sampling of about ``samples`` fixed voxels at every pyramid level."""
    sitk = _sitk()
    if metric == "mse":
        reg.SetMetricAsMeanSquares()
    elif metric == "ncc":
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    voxels = float(np.prod(fixed.GetSize()))
    fractions = [min(1.0, samples * f ** fixed.GetDimension() / voxels) for f in shrink]
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads a seed of 0 as "seed from the wall clock" (sitkWallClock): shift ours so 0 stays a seed
    reg.SetMetricSamplingPercentagePerLevel(fractions, seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)


def _pyramid(reg: Any, shrink: tuple[int, ...]) -> None:
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([max(0.0, s / 2.0) if s > 1 else 0.0 for s in shrink])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()


def _shrink_factors(image: Image, levels: int) -> tuple[int, ...]:
    """Pyramid shrink factors (coarse to fine) that keep at least 16 voxels along every axis."""
    out = []
    for level in reversed(range(levels)):
        f = 2**level
        while f > 1 and min(image.spatial_shape) // f < 16:
            f //= 2
        out.append(f)
    return tuple(out)


def _linear_stage(
    kind: str,
    f: Any,
    m: Any,
    initial: Any,
    *,
    metric: str,
    shrink: tuple[int, ...],
    iterations: int,
    samples: int,
    seed: int,
    fixed_mask: Any,
    moving_mask: Any,
) -> Any:
    """One rigid or affine optimisation (regular-step gradient descent, scales from physical shifts)."""
    sitk = _sitk()
    dims = f.GetDimension()
    if kind == "rigid":
        tx = sitk.Euler3DTransform() if dims == 3 else sitk.Euler2DTransform()
        tx.SetCenter(initial.GetCenter())
        tx.SetTranslation(initial.GetTranslation())
        if dims == 3:
            tx.SetMatrix(initial.GetMatrix())
        else:
            tx.SetAngle(initial.GetAngle())
    else:
        tx = sitk.AffineTransform(dims)
        tx.SetCenter(initial.GetCenter())
        tx.SetMatrix(initial.GetMatrix())
        tx.SetTranslation(initial.GetTranslation())
    reg = sitk.ImageRegistrationMethod()
    _set_metric(reg, metric, f, seed=seed, samples=samples, shrink=shrink)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        reg.SetMetricMovingMask(moving_mask)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    _pyramid(reg, shrink)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    return tx


# --------------------------------------------------------- deformable stages
def _smooth_and_shrink(image: Any, factor: int) -> Any:
    sitk = _sitk()
    if factor == 1:
        return image
    smoothed = sitk.SmoothingRecursiveGaussian(image, [0.5 * factor * s for s in image.GetSpacing()])
    size = [max(2, int(round(n / factor))) for n in image.GetSize()]
    spacing = [(n - 1) * s / (k - 1) for n, s, k in zip(image.GetSize(), image.GetSpacing(), size, strict=True)]
    return sitk.Resample(
        smoothed,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        0.0,
        image.GetPixelID(),
    )


def _demons(
    f: Any, m_on_fixed: Any, *, variant: str, shrink: tuple[int, ...], iterations: tuple[int, ...], sigma: float
) -> Any:
    """Multi-resolution demons on the fixed grid; returns the displacement field (LPS, on the fixed grid)."""
    sitk = _sitk()
    algo = (
        sitk.DiffeomorphicDemonsRegistrationFilter()
        if variant == "diffeomorphic-demons"
        else sitk.FastSymmetricForcesDemonsRegistrationFilter()
    )
    algo.SetSmoothDisplacementField(True)
    algo.SetStandardDeviations(sigma)
    algo.SetUseImageSpacing(False)
    field = None
    for factor, its in zip(shrink, iterations, strict=True):
        fi, mi = _smooth_and_shrink(f, factor), _smooth_and_shrink(m_on_fixed, factor)
        if field is None:
            field = sitk.Image(fi.GetSize(), sitk.sitkVectorFloat64, fi.GetDimension())
            field.CopyInformation(fi)
        else:
            field = sitk.Resample(field, fi)
        algo.SetNumberOfIterations(int(its))
        field = algo.Execute(fi, mi, field)
    return field


def _bspline(
    f: Any,
    m: Any,
    affine: Any,
    *,
    metric: str,
    mesh_mm: float,
    iterations: int,
    samples: int,
    seed: int,
    fixed_mask: Any,
    moving_mask: Any,
) -> Any:
    """Multi-resolution B-spline (mesh refined twice) after the affine stage, gradient descent with line search."""
    sitk = _sitk()
    size = np.array(f.GetSize()) * np.array(f.GetSpacing())
    mesh = [max(1, int(round(s / mesh_mm / 4))) for s in size]
    tx = sitk.BSplineTransformInitializer(f, mesh, 3)
    reg = sitk.ImageRegistrationMethod()
    _set_metric(reg, metric, f, seed=seed, samples=samples, shrink=(4, 2, 1))
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if moving_mask is not None:
        reg.SetMetricMovingMask(moving_mask)
    reg.SetOptimizerAsGradientDescentLineSearch(
        learningRate=5.0, numberOfIterations=iterations, convergenceMinimumValue=1e-4, convergenceWindowSize=5
    )
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransformAsBSpline(tx, inPlace=True, scaleFactors=[1, 2, 4])
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.Execute(f, m)
    return tx


# ----------------------------------------------------------------- the driver
class _Run:
    """A registration in progress: the normalised pair (arrays and SimpleITK images), masks, and its stages."""

    def __init__(
        self, fixed: Image, moving: Image, *, metric: str, fixed_mask: Image | None, moving_mask: Image | None
    ) -> None:
        sitk = _sitk()
        self.fixed, self.metric, self.dims = fixed, metric, fixed.spatial_dims
        self.fixed_n, self.moving_n = rescale_intensities(fixed), rescale_intensities(moving)
        self.f, self.m = to_sitk(self.fixed_n), to_sitk(self.moving_n)
        self.fm = None if fixed_mask is None else sitk.Cast(to_sitk(fixed_mask) != 0, sitk.sitkUInt8)
        self.mm = None if moving_mask is None else sitk.Cast(to_sitk(moving_mask) != 0, sitk.sitkUInt8)
        self.mask = None if fixed_mask is None else fixed_mask.array[0] != 0
        self.stages: list[dict[str, Any]] = []

    def score(self, t: SpatialTransform) -> float:
        """The metric between the fixed image and the moving image warped by ``t`` (inside the fixed mask)."""
        warped = t.apply(self.moving_n, reference=self.fixed_n)
        return similarity(self.fixed_n.array[0], warped.array[0], self.metric, mask=self.mask)  # type: ignore[arg-type]

    def stage(self, name: str, t: SpatialTransform, t0: float) -> None:
        """Record a finished stage: its name, seconds since ``t0`` and the metric with ``t``."""
        self.stages.append({"stage": name, "seconds": round(time.perf_counter() - t0, 3), "metric": self.score(t)})


def _check_options(
    fixed: Image,
    moving: Image,
    *,
    method: str,
    metric: str,
    deformable: str,
    fixed_mask: Image | None,
    moving_mask: Image | None,
) -> tuple[str, str, str]:
    """The method, metric and deformable algorithm looked up, after :func:`check_pair`; refuses demons with MI."""
    method = look_up_option(method, METHODS, what="registration method")
    metric = look_up_option(metric, METRICS, what="metric")
    deformable = look_up_option(deformable, DEFORMABLE, what="deformable algorithm")
    check_pair(fixed, moving, fixed_mask=fixed_mask, moving_mask=moving_mask)
    if method == "deformable" and deformable != "bspline" and metric == "mi":
        raise InvalidArgumentError(
            "demons matches intensities directly, so it cannot optimise mutual information",
            fix="use --metric mse or ncc for same-modality pairs, or the bspline deformable stage for MI",
        )
    return method, metric, deformable


def _linear_stages(run: _Run, method: str, common: dict[str, Any]) -> SpatialTransform:
    """Moments initialisation and rigid, then affine unless ``method`` is rigid; each stage is recorded."""
    sitk = _sitk()
    t0 = time.perf_counter()
    init = sitk.CenteredTransformInitializer(
        run.f,
        run.m,
        sitk.Euler3DTransform() if run.dims == 3 else sitk.Euler2DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    rigid = _linear_stage("rigid", run.f, run.m, init, **common)
    linear = SpatialTransform(rigid, dims=run.dims)
    run.stage("rigid", linear, t0)
    if method in ("affine", "deformable"):
        t0 = time.perf_counter()
        affine = _linear_stage("affine", run.f, run.m, rigid, **common)
        linear = SpatialTransform(affine, dims=run.dims)
        run.stage("affine", linear, t0)
    return linear


def _bspline_stage(
    run: _Run, linear: SpatialTransform, *, mesh_mm: float, iterations: int, samples: int, seed: int
) -> SpatialTransform:
    """The B-spline stage on top of ``linear``; returns the composed transform."""
    bs = _bspline(
        run.f,
        run.m,
        linear.sitk,
        metric=run.metric,
        mesh_mm=mesh_mm,
        iterations=iterations,
        samples=samples,
        seed=seed,
        fixed_mask=run.fm,
        moving_mask=run.mm,
    )
    return SpatialTransform(bs, dims=run.dims, grid=run.fixed).then(linear)


def _demons_stage(
    run: _Run,
    linear: SpatialTransform,
    *,
    variant: str,
    shrink: tuple[int, ...],
    iterations: tuple[int, ...],
    sigma: float,
) -> SpatialTransform:
    """Demons on the linearly aligned, histogram-matched moving image; returns the composed transform."""
    sitk = _sitk()
    if len(iterations) != len(shrink):
        raise InvalidArgumentError(
            f"demons_iterations needs one entry per pyramid level ({len(shrink)}), got {len(iterations)}"
        )
    m_on_fixed = to_sitk(linear.apply(run.moving_n, reference=run.fixed_n))
    m_on_fixed = sitk.HistogramMatching(
        m_on_fixed, run.f, numberOfHistogramLevels=256, numberOfMatchPoints=15, thresholdAtMeanIntensity=True
    )
    dfield = _demons(run.f, m_on_fixed, variant=variant, shrink=shrink, iterations=iterations, sigma=sigma)
    dense = SpatialTransform(sitk.DisplacementFieldTransform(dfield), dims=run.dims, grid=run.fixed)
    return dense.then(linear)


def register_images(
    fixed: Image,
    moving: Image,
    *,
    method: Method = "affine",
    metric: Metric = "mi",
    deformable: str = "demons",
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    levels: int = 3,
    iterations: int = 200,
    demons_iterations: tuple[int, ...] = (60, 40, 20),
    demons_sigma: float = 1.5,
    bspline_mesh_mm: float = 10.0,
    samples: int = 20000,
    seed: int = 0,
    check_divergence: bool = True,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed``; the result maps fixed-space points to moving-space points.

    Args:
        fixed: The image whose grid the result lives on.
        moving: The image to align.
        method: ``"rigid"``, ``"affine"`` (rigid first), or ``"deformable"`` (affine, then ``deformable``).
        metric: Similarity for linear and B-spline stages and the divergence check: ``"mse"``, ``"ncc"``, ``"mi"``.
        deformable: ``"demons"`` (symmetric forces), ``"diffeomorphic-demons"`` or ``"bspline"``.
        fixed_mask: Region of the fixed image the metric uses (label image on the fixed grid).
        moving_mask: Region of the moving image the metric uses.
        levels: Pyramid levels (halving resolution each; coarse levels keep >= 16 voxels per axis).
        iterations: Optimiser iterations per level for linear and B-spline stages.
        demons_iterations: Demons iterations per level, coarse to fine (one entry per level).
        demons_sigma: Gaussian smoothing of the demons field, in voxels of each level.
        bspline_mesh_mm: Control-point spacing of the finest B-spline mesh, mm.
        samples: Fixed voxels the linear and B-spline metric samples per iteration (random, seeded), per level.
        seed: Sampling seed.
        check_divergence: Raise :class:`RegistrationDivergedError` when the metric ends worse than it began.

    Raises:
        GeometryError: See :func:`check_pair`.
        InvalidArgumentError: Unknown method, metric or deformable algorithm; demons with mutual information.
        RegistrationDivergedError: The result is worse than the identity.
    """
    method, metric, deformable = _check_options(  # type: ignore[assignment]
        fixed, moving, method=method, metric=metric, deformable=deformable,
        fixed_mask=fixed_mask, moving_mask=moving_mask,
    )
    start = time.perf_counter()
    run = _Run(fixed, moving, metric=metric, fixed_mask=fixed_mask, moving_mask=moving_mask)
    shrink = _shrink_factors(fixed, levels)
    before = run.score(SpatialTransform.identity(run.dims))
    common = dict(
        metric=metric, shrink=shrink, iterations=iterations, samples=samples, seed=seed,
        fixed_mask=run.fm, moving_mask=run.mm,
    )
    result = _linear_stages(run, method, common)
    if method == "deformable":
        t0 = time.perf_counter()
        if deformable == "bspline":
            result = _bspline_stage(
                run, result, mesh_mm=bspline_mesh_mm, iterations=iterations, samples=samples, seed=seed
            )
        else:
            result = _demons_stage(
                run, result, variant=deformable, shrink=shrink, iterations=demons_iterations, sigma=demons_sigma
            )
        run.stage(deformable, result, t0)
    after = run.stages[-1]["metric"]
    if check_divergence and after < before:
        raise RegistrationDivergedError(
            f"{method} registration diverged: {metric} similarity went from {before:.4g} at the start to {after:.4g}",
            path=moving.meta.get("source"),
            fix="check the pair overlaps anatomically, try another --metric, or give masks",
        )
    return RegistrationResult(
        transform=result,
        method=method,
        metric=metric,
        metric_before=before,
        metric_after=after,
        seconds=time.perf_counter() - start,
        stages=run.stages,
    )
