"""Library warnings that deepmia's own calls trigger and that say nothing to a deepmia user.

Each is filtered narrowly (its category, the start of its message and the library module it is attributed to),
never by category alone, so a new warning from the same library still shows. Where deepmia could avoid the
warning at its call site it does (e.g. ``deepmia.nn.registration.map_points`` copies read-only arrays); the
ones here come from inside the library:

- MONAI 1.6 ``BendingEnergyLoss`` (``monai/losses/deform.py``) and ``OcclusionSensitivity``
  (``monai/visualize/occlusion_sensitivity.py``) index tensors with lists, which torch 2.x deprecates
  ("Using a non-tuple sequence for multidimensional indexing"); the result is the same until torch 2.9.
- MONAI ``Warp`` announces that it uses torch's ``grid_sample`` (no compiled MONAI extension): deepmia's choice.
- MONAI's surface-distance metrics pass their own deprecated ``always_return_as_numpy`` argument to
  ``get_mask_edges`` (``monai/metrics/utils.py``), which then warns about it (from MONAI's deprecation helper).

``OcclusionSensitivity`` also writes through ``Tensor.__setitem__`` with a list, attributed to ``torch._tensor``:
that one is filtered only around the occlusion call (:mod:`deepmia.explain.saliency`), not here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LIBRARY_WARNINGS", "ignore_library_warnings", "library_warnings_ignored"]

#: ``(message regex, category, module regex)`` of each filtered warning.
LIBRARY_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"Using a non-tuple sequence for multidimensional indexing", UserWarning,
     r"monai\.(losses\.deform|visualize\.occlusion_sensitivity)"),
    (r"monai\.networks\.blocks\.Warp: Using PyTorch native grid_sample", UserWarning, r"monai\.networks\.blocks\.warp"),
    (r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy", FutureWarning, r"monai\.utils\.deprecate_utils"),
)


def ignore_library_warnings() -> None:
    """Add the filters of :data:`LIBRARY_WARNINGS` to the process's warning filters (the CLI does, on start)."""
    for message, category, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


@contextmanager
def library_warnings_ignored() -> Iterator[None]:
    """The filters of :data:`LIBRARY_WARNINGS` for the duration of a ``with`` block (restored after)."""
    with warnings.catch_warnings():
        ignore_library_warnings()
        yield
