"""DICOM reading: series folders and single files (multi-frame, enhanced, mosaic) into :class:`~deepmia.image.Image`.

Public API:

* :func:`list_series` — find the series under a folder from headers only (``deepmia info FOLDER``).
* :func:`read_series` — read one series into a volume; refuses geometry it cannot trust.
* :func:`read` — the registered reader: a file is read alone, a folder as a series.
* :func:`apply_voi_lut` / :func:`apply_modality_lut` — value transforms (the Modality LUT is applied on read).

DICOM's LPS world is converted to RAS+ once, in :mod:`deepmia.io.dicom.geometry`. Writing is in
:mod:`deepmia.io.dicom.writer`.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from deepmia.image import Image
from deepmia.io import Format, register_format
from deepmia.io.dicom.pixels import apply_modality_lut, apply_voi_lut
from deepmia.io.dicom.series import SeriesInfo, SeriesList, list_series, read_file, read_series

__all__ = [
    "SeriesInfo",
    "SeriesList",
    "list_series",
    "read_series",
    "read_file",
    "read",
    "apply_voi_lut",
    "apply_modality_lut",
]


def read(
    path: str | PathLike[str], *, series_uid: str | None = None, resample: bool = False, **_: Any
) -> Image:
    """Read a DICOM file (that file alone) or a folder (one series; ``series_uid`` picks among several).

    Args:
        path: A DICOM file or a folder.
        series_uid: Which series to read from a folder holding several.
        resample: Resample a tilted or unevenly spaced series onto a regular grid (never done by default).
    """
    p = Path(path)
    if p.is_dir():
        return read_series(p, series_uid=series_uid, resample=resample)
    return read_file(p, resample=resample)


def _write(image: Image, path: Path, **options: Any) -> None:
    from deepmia.io.dicom.writer import write_series

    write_series(image, path, **options)


register_format(Format("dicom", (".dcm", ".dicom", ".ima"), read=read, write=_write))
