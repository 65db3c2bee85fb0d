"""Classical image processing over :class:`~deepmia.image.Image` as named, validated, composable steps.

Filters, contrast, frequency filters, resampling, rule-based segmentation and morphology.

Every step is a pure function ``step(image, *, params) -> Image`` (the input is never changed; geometry is kept
or updated). Steps are registered by name with typed parameters, so pipelines can be written as text:

Example:
    >>> from deepmia.processing import apply_steps            # doctest: +SKIP
    >>> out = apply_steps(img, ["gaussian:sigma=1.5", "otsu", "largest_component"])  # doctest: +SKIP

Modules: :mod:`.filters` (mean, median, gaussian, bilateral, anisotropic, nlmeans, unsharp), :mod:`.intensity`
(window, gamma, histeq, clahe, normalize), :mod:`.frequency` (lowpass, highpass, bandpass), :mod:`.bias` (n4),
:mod:`.standardize` (Nyúl), :mod:`.spatial` (resample, resize, reorient, crop_foreground, pad),
:mod:`.segmentation` (threshold, otsu, multiotsu, li, triangle, region_grow, watershed, canny, chan_vese),
:mod:`.morphology` (dilate, erode, open, close, fill_holes, largest_component, components, component_table).
Heavy backends (SimpleITK, scikit-image) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from deepmia.processing._steps import StepSpec, apply_steps, parse_step, resolve_steps, steps

__all__ = ["StepSpec", "apply_steps", "parse_step", "resolve_steps", "steps", "all_steps"]

_MODULES = ("filters", "intensity", "frequency", "bias", "standardize", "spatial", "segmentation", "morphology")


def all_steps() -> list[StepSpec]:
    """Every registered step (loads the built-in step modules)."""
    from deepmia.processing._steps import load_builtin_steps

    load_builtin_steps()
    return [steps.get(n) for n in steps.names()]


def __getattr__(name: str) -> Any:
    for module in _MODULES:
        mod = importlib.import_module(f"deepmia.processing.{module}")
        if name in getattr(mod, "__all__", ()):
            return getattr(mod, name)
    raise AttributeError(f"module 'deepmia.processing' has no attribute {name!r}")
