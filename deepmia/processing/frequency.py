"""Frequency-domain filters: lowpass, highpass, bandpass with ideal, Butterworth or Gaussian transfer functions.

Cutoffs are spatial frequencies in cycles/mm, so one filter means the same thing on any grid: the radial
frequency of a voxel of the spectrum is ``sqrt(sum_i f_i^2)`` with ``f_i = k_i / (n_i * spacing_i)``. The FFT is
SciPy's real FFT (multi-threaded). The image is treated as periodic, as every FFT filter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.processing._steps import as_float, map_channels, step

__all__ = ["transfer", "radial_frequency", "lowpass", "highpass", "bandpass", "plot_response"]

Kind = Literal["ideal", "butterworth", "gaussian"]
Band = Literal["lowpass", "highpass", "bandpass"]
Cutoff = Annotated[float, Field(gt=0, le=1000)]
Order = Annotated[int, Field(ge=1, le=20)]


def radial_frequency(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Radial spatial frequency (cycles/mm) on the half spectrum of ``scipy.fft.rfftn`` for ``shape``."""
    from scipy import fft

    axes = []
    for i, (n, d) in enumerate(zip(shape, spacing, strict=False)):
        f = fft.rfftfreq(n, d) if i == len(shape) - 1 else fft.fftfreq(n, d)
        view = [1] * len(shape)
        view[i] = f.size
        axes.append((f**2).reshape(view))
    return np.sqrt(sum(axes))


def _low(r: np.ndarray, cutoff: float, kind: str, order: int) -> np.ndarray:
    if kind == "ideal":
        return (r <= cutoff).astype(np.float64)
    if kind == "butterworth":
        return 1.0 / (1.0 + (r / cutoff) ** (2 * order))
    return np.exp(-np.log(2.0) * (r / cutoff) ** 2)


def transfer(
    r: np.ndarray,
    band: Band,
    *,
    kind: Kind,
    order: int = 2,
    cutoff: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """Transfer function H(r) in [0, 1] at radial frequencies ``r`` (cycles/mm).

    ``lowpass``/``highpass`` use ``cutoff``; ``bandpass`` passes ``low <= r <= high`` (the product of a
    high-pass at ``low`` and a low-pass at ``high``). Butterworth (``order``) and Gaussian filters have gain 1/2 at
    their cutoff, so all three kinds share the meaning of a cutoff; Gaussian bands are the broadest.
    """
    if band == "lowpass":
        return _low(r, cutoff, kind, order)
    if band == "highpass":
        return 1.0 - _low(r, cutoff, kind, order) if kind != "ideal" else (r > cutoff).astype(np.float64)
    if low >= high:
        raise InvalidArgumentError(f"bandpass: low cutoff {low} must be below high cutoff {high} (cycles/mm)")
    hp = 1.0 - _low(r, low, kind, order) if kind != "ideal" else (r >= low).astype(np.float64)
    return hp * _low(r, high, kind, order)


def _apply(image: Image, band: Band, **kw) -> Image:
    from scipy import fft

    shape = image.spatial_shape
    h = transfer(radial_frequency(shape, image.spacing), band, **kw)

    def run(a: np.ndarray) -> np.ndarray:
        a = as_float(a)
        spec = fft.rfftn(a, workers=-1)
        spec *= h.astype(a.dtype, copy=False)
        return fft.irfftn(spec, s=shape, workers=-1).astype(a.dtype, copy=False)

    return map_channels(image, run)


@step("lowpass")
def lowpass(image: Image, *, cutoff: Cutoff = 0.1, kind: Kind = "butterworth", order: Order = 2) -> Image:
    """Keep spatial frequencies below ``cutoff`` cycles/mm (smooths)."""
    return _apply(image, "lowpass", cutoff=cutoff, kind=kind, order=order)


@step("highpass")
def highpass(image: Image, *, cutoff: Cutoff = 0.1, kind: Kind = "butterworth", order: Order = 2) -> Image:
    """Keep spatial frequencies above ``cutoff`` cycles/mm (edges and texture; removes the mean)."""
    return _apply(image, "highpass", cutoff=cutoff, kind=kind, order=order)


@step("bandpass")
def bandpass(
    image: Image, *, low: Cutoff = 0.05, high: Cutoff = 0.2, kind: Kind = "butterworth", order: Order = 2
) -> Image:
    """Keep spatial frequencies between ``low`` and ``high`` cycles/mm."""
    return _apply(image, "bandpass", low=low, high=high, kind=kind, order=order)


def plot_response(
    path: str | PathLike[str],
    band: Band,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    kinds: Sequence[Kind] = ("ideal", "butterworth", "gaussian"),
    order: int = 2,
    cutoff: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> None:
    """Plot the radial transfer function H(f) of a filter for each ``kind`` (PNG/PDF/SVG by suffix, matplotlib Agg).

    The frequency axis runs to the Nyquist frequency of the finest axis, ``1 / (2 min(spacing))``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nyquist = 1.0 / (2.0 * min(spacing))
    r = np.linspace(0, nyquist, 512)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    for kind in kinds:
        ax.plot(r, transfer(r, band, kind=kind, order=order, cutoff=cutoff, low=low, high=high), label=kind)
    for f in (cutoff, low, high):
        if f is not None:
            ax.axvline(f, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("gain H(f)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{band} response" + (f" (Butterworth order {order})" if "butterworth" in kinds else ""))
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
