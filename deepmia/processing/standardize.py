"""Nyúl-Udupa histogram standardisation: learn intensity landmarks on a set of images, map new images onto them.

MRI intensities have no fixed unit; the method (Nyúl & Udupa 1999; Nyúl, Udupa & Zhang 2000) maps chosen
percentiles of each image's foreground histogram piecewise-linearly onto a standard scale learned as the mean
landmarks of a training set. The learned landmarks are stored as JSON and applied with the ``nyul`` step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from deepmia.errors import InvalidArgumentError, ReadError
from deepmia.image import Image
from deepmia.processing._steps import as_float, map_channels, read_mask, step

__all__ = ["NyulModel", "fit_nyul", "nyul"]

DEFAULT_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


@dataclass(frozen=True)
class NyulModel:
    """Learned Nyúl landmarks.

    Attributes:
        percentiles: Histogram percentiles used as landmarks (increasing, first and last are the ends).
        landmarks: Standard-scale intensity of each percentile (mean over the training images).
        scale: (low, high) of the standard scale the first and last percentiles map to.
        num_images: How many images the landmarks were learned on.
    """

    percentiles: tuple[float, ...]
    landmarks: tuple[float, ...]
    scale: tuple[float, float] = (0.0, 100.0)
    num_images: int = 0
    kind: str = field(default="nyul")

    def save(self, path: str | PathLike[str]) -> None:
        """Write the model as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | PathLike[str]) -> NyulModel:
        """Read a model written by :meth:`save`.

        Raises:
            ReadError: The file is missing or is not a Nyúl landmark file.
        """
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            model = cls(
                percentiles=tuple(float(v) for v in data["percentiles"]),
                landmarks=tuple(float(v) for v in data["landmarks"]),
                scale=tuple(float(v) for v in data["scale"]),  # type: ignore[arg-type]
                num_images=int(data.get("num_images", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReadError(f"not a Nyúl landmark file: {exc}", path=p, fix="fit one with fit_nyul()") from exc
        if len(model.percentiles) != len(model.landmarks) or np.any(np.diff(model.landmarks) <= 0):
            raise ReadError("landmarks must be strictly increasing, one per percentile", path=p)
        return model

    def map(self, array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Map an array onto the standard scale (piecewise linear, ends extrapolated linearly)."""
        a = as_float(array)
        src = _image_landmarks(a, mask, self.percentiles)
        dst = np.asarray(self.landmarks)
        out = np.interp(a, src, dst)
        lo_slope = (dst[1] - dst[0]) / (src[1] - src[0])
        hi_slope = (dst[-1] - dst[-2]) / (src[-1] - src[-2])
        out = np.where(a < src[0], dst[0] + (a - src[0]) * lo_slope, out)
        out = np.where(a > src[-1], dst[-1] + (a - src[-1]) * hi_slope, out)
        return out.astype(a.dtype, copy=False)


def _foreground(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is not None:
        return a[mask]
    return a[a > a.mean()]  # the classic Nyúl foreground: above the mean intensity


def _image_landmarks(a: np.ndarray, mask: np.ndarray | None, percentiles: Sequence[float]) -> np.ndarray:
    values = _foreground(a, mask)
    if values.size < 2:
        raise InvalidArgumentError("nyul: the foreground is empty; pass a mask")
    lm = np.percentile(values, percentiles)
    if np.any(np.diff(lm) <= 0):
        raise InvalidArgumentError(
            f"nyul: the image's foreground histogram is degenerate "
            f"(landmarks {np.round(lm, 3).tolist()} not increasing)"
        )
    return lm


def fit_nyul(
    images: Iterable[Image],
    *,
    masks: Iterable[Image | None] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    scale: tuple[float, float] = (0.0, 100.0),
) -> NyulModel:
    """Learn standard-scale landmarks from ``images`` (first channel of each), optionally within ``masks``.

    Each image's landmarks are mapped linearly so its first/last percentiles land on ``scale``; the model's
    landmarks are the means over images.

    Raises:
        InvalidArgumentError: No images, bad percentiles, or a degenerate histogram.
    """
    pct = np.asarray(percentiles, dtype=float)
    if pct.size < 3 or np.any(np.diff(pct) <= 0) or pct[0] < 0 or pct[-1] > 100:
        raise InvalidArgumentError(f"nyul: percentiles must be >= 3 increasing values in [0, 100], got {pct.tolist()}")
    images = list(images)
    mask_list = list(masks) if masks is not None else [None] * len(images)
    if not images:
        raise InvalidArgumentError("nyul: fit needs at least one image")
    if len(mask_list) != len(images):
        raise InvalidArgumentError(f"nyul: {len(images)} images but {len(mask_list)} masks")
    rows = []
    for img, m in zip(images, mask_list, strict=False):
        lm = _image_landmarks(as_float(img.array[0]), read_mask(m, img), pct)
        rows.append(scale[0] + (lm - lm[0]) / (lm[-1] - lm[0]) * (scale[1] - scale[0]))
    mean = np.mean(rows, axis=0)
    return NyulModel(
        tuple(pct.tolist()), tuple(float(v) for v in mean), (float(scale[0]), float(scale[1])), len(images)
    )


@step("nyul")
def nyul(image: Image, *, model: str, mask: Image | str | Path | None = None) -> Image:
    """Map intensities onto the standard scale of a Nyúl ``model`` (path to the JSON from :func:`fit_nyul`)."""
    m = NyulModel.load(model)
    msk = read_mask(mask, image)
    return map_channels(image, lambda a: m.map(a, msk))
