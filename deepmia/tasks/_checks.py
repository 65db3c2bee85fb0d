"""Input checks shared by every task's predictor: does an image look like the model's training data?

A model trained on 28x28 chest X-rays in 0..255 gives a confident answer on a 2,000-pixel film in 0..32767; this
module compares an input with the training fingerprint stored in the plan (image size and spacing ranges,
intensity statistics, modality) and says, in words, what falls outside. Predictors put the reasons in their
results (flagged, never silently trusted) and the batch loop writes them to ``run.json``.

Example:
    >>> import numpy as np
    >>> from deepmia.image import Image
    >>> image = Image(np.full((1, 512, 512), 3000.0, np.float32))
    >>> for w in fingerprint_warnings(image, shape=[(28, 28), (28, 28)], intensity=[(145.8, 42.9)]):
    ...     print(w)
    size 512 x 512 is outside the training range 28 x 28 (more than 2x off)
    mean intensity 3000 of channel 0 is 66.5 training standard deviations from the training mean 145.8
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["fingerprint_warnings", "ranges_of", "SIZE_FACTOR", "INTENSITY_Z"]

#: An axis more than this factor smaller than the training minimum or larger than the maximum is flagged.
SIZE_FACTOR = 2.0
#: A channel mean more than this many training standard deviations from the training mean is flagged.
INTENSITY_Z = 4.0
_MODALITY = {"MRI": "MR", "MR": "MR", "T1": "MR", "T2": "MR", "FLAIR": "MR", "T1W": "MR", "T2W": "MR", "ADC": "MR",
             "DWI": "MR", "CT": "CT", "PET": "PT", "PT": "PT", "US": "US", "CR": "XR", "DX": "XR", "XR": "XR"}


def ranges_of(entries: Sequence[Mapping[str, Any]] | None) -> list[tuple[float, float]] | None:
    """``[(min, max), ...]`` from a fingerprint's per-axis ``{"min", "median", "max"}`` entries (None if absent)."""
    if not entries:
        return None
    try:
        return [(float(e["min"]), float(e["max"])) for e in entries]
    except (KeyError, TypeError, ValueError):
        return None


def _fmt(values: Sequence[float]) -> str:
    return " x ".join(f"{v:g}" for v in values)


def _outside(value: float, low: float, high: float, factor: float) -> bool:
    return value < low / factor or value > high * factor


def fingerprint_warnings(
    image: Any,
    *,
    shape: Sequence[tuple[float, float]] | None = None,
    spacing: Sequence[tuple[float, float]] | None = None,
    intensity: Sequence[tuple[float, float]] | None = None,
    modalities: Sequence[str] | None = None,
) -> list[str]:
    """Reasons why ``image`` does not look like the training data (empty when it does).

    Args:
        image: The input :class:`~deepmia.image.Image`.
        shape: Per spatial axis, the training images' ``(min, max)`` size in voxels.
        spacing: Per spatial axis, the training ``(min, max)`` spacing in mm (skipped when the input's spacing is
            unknown).
        intensity: Per channel, the training ``(mean, std)`` in the images' own units (skipped for schemes that
            normalise each image on its own, where absolute intensities carry no meaning).
        modalities: The training modalities (``MRI``, ``CT``, ...), compared with a DICOM input's ``Modality``.
    """
    from deepmia.io import spacing_known

    out = []
    size = list(image.spatial_shape)
    if shape is not None and len(shape) == len(size):
        if any(_outside(s, lo, hi, SIZE_FACTOR) for s, (lo, hi) in zip(size, shape, strict=True)):
            lo = _fmt([r[0] for r in shape])
            hi = _fmt([r[1] for r in shape])
            span = lo if lo == hi else f"{lo} to {hi}"
            out.append(f"size {_fmt(size)} is outside the training range {span} (more than {SIZE_FACTOR:g}x off)")
    if spacing is not None and len(spacing) == len(size) and spacing_known(image):
        sp = [float(s) for s in image.spacing]
        if any(_outside(s, lo, hi, SIZE_FACTOR) for s, (lo, hi) in zip(sp, spacing, strict=True)):
            span = f"{_fmt([r[0] for r in spacing])} to {_fmt([r[1] for r in spacing])}"
            out.append(f"spacing {_fmt([round(s, 3) for s in sp])} mm is outside the training range {span} mm")
    if intensity is not None and len(intensity) == image.num_channels:
        for c, (mean, std) in enumerate(intensity):
            if mean is None or not std:
                continue
            m = float(np.nanmean(image.array[c], dtype=np.float64))
            z = abs(m - mean) / std
            if z > INTENSITY_Z:
                out.append(f"mean intensity {m:.4g} of channel {c} is {z:.1f} training standard deviations from the "
                           f"training mean {mean:.4g}")
    found = _MODALITY.get(str(image.meta.get("modality") or "").upper())
    trained = {_MODALITY.get(str(m).upper()) for m in (modalities or ())} - {None}
    if found and trained and found not in trained:
        out.append(f"modality {image.meta.get('modality')} differs from the training data's "
                   f"({', '.join(sorted(str(m) for m in modalities or ()))})")
    return out
