"""Intensity transforms: scale and shift, contrast, gamma, Gaussian noise, Gaussian blur.

They change image values only: label maps and boxes pass through unchanged. Each random twin draws its
parameters; the noise transform keeps a seed, so the same noise is added on replay and subtracted by its inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deepmia.transforms.base import (
    RandomTransform,
    Transform,
    check_interval,
    check_probability,
    fires,
    register,
    uniform,
)

__all__ = ["Intensity", "Contrast", "Gamma", "Noise", "Blur",
           "RandomIntensity", "RandomContrast", "RandomGamma", "RandomNoise", "RandomBlur"]


@register
@dataclass(frozen=True)
class Intensity(Transform):
    """``x * scale + shift``."""

    scale: float = 1.0
    shift: float = 0.0

    @property
    def is_identity(self) -> bool:
        """True for scale 1 and shift 0."""
        return self.scale == 1.0 and self.shift == 0.0

    def apply_image(self, x: Any) -> Any:
        """The rescaled image."""
        return x * self.scale + self.shift

    def inverse(self) -> Intensity:
        """``(x - shift) / scale``."""
        return Intensity(1.0 / self.scale, -self.shift / self.scale)

    @classmethod
    def apply_batch(cls, steps: Sequence[Transform], images: Any, labels: Any) -> None:
        """One multiply-add over the batch."""
        import torch

        shape = (len(steps),) + (1,) * (images.dim() - 1)
        scale = torch.tensor([t.scale for t in steps], dtype=images.dtype).reshape(shape)  # type: ignore[attr-defined]
        shift = torch.tensor([t.shift for t in steps], dtype=images.dtype).reshape(shape)  # type: ignore[attr-defined]
        images.mul_(scale).add_(shift)


@register
@dataclass(frozen=True)
class Contrast(Transform):
    """``(x - mean) * factor + mean``, the mean taken over the whole sample (every channel)."""

    factor: float = 1.0

    @property
    def is_identity(self) -> bool:
        """True for factor 1."""
        return self.factor == 1.0

    def apply_image(self, x: Any) -> Any:
        """The image with its contrast around the mean changed."""
        mean = float(x.mean())
        return (x - mean) * self.factor + mean

    def inverse(self) -> Contrast:
        """The reciprocal factor (the mean is unchanged by the transform)."""
        return Contrast(1.0 / self.factor)


@register
@dataclass(frozen=True)
class Gamma(Transform):
    """Gamma on the sample's min-max range: ``((x - lo) / (hi - lo)) ** gamma * (hi - lo) + lo``."""

    gamma: float = 1.0

    @property
    def is_identity(self) -> bool:
        """True for gamma 1."""
        return self.gamma == 1.0

    def apply_image(self, x: Any) -> Any:
        """The image with the gamma curve applied (``lo`` and ``hi`` stay where they are)."""
        lo, hi = float(x.min()), float(x.max())
        span = max(hi - lo, 1e-6)
        return ((x - lo) / span) ** self.gamma * span + lo

    def inverse(self) -> Gamma:
        """The reciprocal gamma."""
        return Gamma(1.0 / self.gamma)


@register
@dataclass(frozen=True)
class Noise(Transform):
    """Add Gaussian noise of standard deviation ``std``, drawn from ``seed`` (so a replay adds the same noise)."""

    std: float = 0.0
    seed: int = 0

    @property
    def is_identity(self) -> bool:
        """True for std 0."""
        return self.std == 0.0

    def apply_image(self, x: Any) -> Any:
        """The image plus the seeded noise."""
        import torch

        numpy_in = isinstance(x, np.ndarray)
        dtype = (torch.from_numpy(np.empty(0, x.dtype)) if numpy_in else x).dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        noise = torch.randn(tuple(x.shape), generator=torch.Generator().manual_seed(self.seed), dtype=dtype)
        noise = noise * self.std
        return x + (noise.numpy() if numpy_in else noise)

    def inverse(self) -> Noise:
        """The same noise, subtracted."""
        return Noise(-self.std, self.seed)


@register
@dataclass(frozen=True)
class Blur(Transform):
    """Gaussian blur with ``sigma`` pixels per spatial axis (each channel separately). Cannot be inverted."""

    invertible: ClassVar[bool] = False
    sigma: tuple[float, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True when every sigma is 0."""
        return not any(self.sigma)

    def apply_image(self, x: Any) -> Any:
        """The blurred image (SciPy ``gaussian_filter``, edges ``nearest``)."""
        from scipy import ndimage

        a = x if isinstance(x, np.ndarray) else x.numpy()
        out = np.stack([ndimage.gaussian_filter(ch, self.sigma, mode="nearest") for ch in a])
        if isinstance(x, np.ndarray):
            return out
        import torch

        return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------ random twins
def _draw(rng: np.random.Generator, p: float, interval: tuple[float, float], identity: float, n: int) -> list[float]:
    """``n`` values: uniform in ``interval`` where the step fires (probability ``p``), ``identity`` elsewhere."""
    fired = fires(rng, p, n)
    out = np.full(n, identity)
    out[fired] = uniform(rng, *interval, int(fired.sum()))
    return out.tolist()


class RandomIntensity(RandomTransform):
    """With probability ``p``: scale uniform in ``scale`` and shift uniform in ``shift``.

    Raises:
        InvalidArgumentError: A reversed range or ``p`` outside [0, 1].
    """

    keeps_shape = True

    def __init__(self, *, scale: Sequence[float] = (1.0, 1.0), shift: Sequence[float] = (0.0, 0.0),
                 p: float = 1.0) -> None:
        self.scale = check_interval("scale", scale)
        self.shift = check_interval("shift", shift)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """The scale and shift of ``n`` samples."""
        fired = fires(rng, self.p, n)
        k = int(fired.sum())
        scale, shift = np.ones(n), np.zeros(n)
        scale[fired], shift[fired] = uniform(rng, *self.scale, k), uniform(rng, *self.shift, k)
        return [Intensity(a, b) for a, b in zip(scale.tolist(), shift.tolist(), strict=True)]


class RandomContrast(RandomTransform):
    """With probability ``p``: contrast factor uniform in ``factor``.

    Raises:
        InvalidArgumentError: A reversed range or ``p`` outside [0, 1].
    """

    keeps_shape = True

    def __init__(self, factor: Sequence[float] = (0.75, 1.25), *, p: float = 1.0) -> None:
        self.factor = check_interval("factor", factor)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """The factor of ``n`` samples."""
        return [Contrast(v) for v in _draw(rng, self.p, self.factor, 1.0, n)]


class RandomGamma(RandomTransform):
    """With probability ``p``: gamma uniform in ``gamma``.

    Raises:
        InvalidArgumentError: A reversed or non-positive range or ``p`` outside [0, 1].
    """

    keeps_shape = True

    def __init__(self, gamma: Sequence[float] = (0.7, 1.5), *, p: float = 1.0) -> None:
        self.gamma = check_interval("gamma", gamma, low=1e-6)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """The gamma of ``n`` samples."""
        return [Gamma(v) for v in _draw(rng, self.p, self.gamma, 1.0, n)]


class RandomNoise(RandomTransform):
    """With probability ``p``: Gaussian noise with a standard deviation uniform in ``std`` and a fresh seed.

    Raises:
        InvalidArgumentError: A reversed or negative range or ``p`` outside [0, 1].
    """

    keeps_shape = True

    def __init__(self, std: Sequence[float] = (0.0, 0.1), *, p: float = 1.0) -> None:
        self.std = check_interval("std", std, low=0.0)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """The standard deviation and the noise seed of ``n`` samples."""
        std = _draw(rng, self.p, self.std, 0.0, n)
        seeds = rng.integers(2**31, size=n).tolist()
        return [Noise(v, s) if v else Noise() for v, s in zip(std, seeds, strict=True)]


class RandomBlur(RandomTransform):
    """With probability ``p``: Gaussian blur, sigma per axis uniform in ``sigma`` (pixels).

    Raises:
        InvalidArgumentError: A reversed or negative range or ``p`` outside [0, 1].
    """

    keeps_shape = True

    def __init__(self, sigma: Sequence[float] = (0.5, 1.5), *, p: float = 1.0) -> None:
        self.sigma = check_interval("sigma", sigma, low=0.0)
        self.p = check_probability("p", p)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """One sigma per spatial axis for each of ``n`` samples."""
        fired = fires(rng, self.p, n)
        sigma = np.zeros((n, len(shape)))
        sigma[fired] = uniform(rng, *self.sigma, int(fired.sum()) * len(shape)).reshape(-1, len(shape))
        return [Blur(tuple(row)) for row in sigma.tolist()]
