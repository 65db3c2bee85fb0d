"""Helpers shared by the format modules: the image kind on read, and building an Image whose errors name the file.

A file may mark itself as a label map (NIfTI ``intent_code`` 1002, a ``deepmia_kind`` key in NRRD/MetaImage
headers and deepmia ``.npz`` files). The caller's ``kind=`` wins; ``None`` means "what the file says, else
intensity". Label arrays must hold integers: whole-valued float arrays are converted, others refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, DeepmiaError
from deepmia.image import Image, Kind

#: Header key under which NRRD, MetaImage and TIFF files written by deepmia record the image kind.
KIND_KEY = "deepmia_kind"


def resolve_kind(arr: np.ndarray, kind: Kind | None, file_kind: str | None, path: Path) -> tuple[np.ndarray, Kind]:
    """The array and kind to build an :class:`~deepmia.image.Image` from.

    Args:
        arr: Pixels as read from the file.
        kind: What the caller asked for (``None``: follow the file).
        file_kind: What the file says (``"label"``, ``"intensity"`` or ``None``).
        path: The file, for error messages.

    Raises:
        CorruptFileError: A label image holds non-integer values.
    """
    resolved: Kind = kind or ("label" if file_kind == "label" else "intensity")
    if resolved == "label" and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise CorruptFileError(
                "label image holds non-integer values", path=path, fix="read it with kind='intensity'"
            )
        lo, hi = rounded.min(initial=0), rounded.max(initial=0)
        arr = rounded.astype(np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32)
    return arr, resolved


def build_image(arr: np.ndarray, affine: np.ndarray, *, kind: Kind | None, file_kind: str | None,
                meta: dict[str, Any], path: Path) -> Image:
    """An :class:`Image` from pixels read from ``path``; errors (bad geometry, non-integer labels) name the file."""
    if not arr.dtype.isnative:  # big-endian files: keep the type, in this machine's byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr, resolved = resolve_kind(arr, kind, file_kind, path)
    try:
        return Image(np.ascontiguousarray(arr), affine, kind=resolved, meta=meta)
    except DeepmiaError as exc:
        raise type(exc)(exc.problem, path=path, fix=exc.fix) from exc


def with_path(exc: DeepmiaError, path: Path) -> DeepmiaError:
    """The same error, naming ``path`` (for errors raised by code that does not know the file)."""
    return type(exc)(exc.problem, path=path, fix=exc.fix)
