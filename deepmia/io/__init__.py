"""Reading and writing images in every common medical format.

``read_image(path)`` picks the reader from the file's suffix, or from its content (DICOM files often have no
suffix; a folder is read as a DICOM series). ``write_image(image, path)`` picks the writer from the suffix.
Format modules load lazily so ``import deepmia`` stays light.

Example:
    >>> from deepmia.io import read_image, write_image  # doctest: +SKIP
    >>> img = read_image("ct.nii.gz")                    # doctest: +SKIP
    >>> write_image(img, "ct.nrrd")                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from deepmia.errors import MissingDependencyError, ReadError, UnsupportedFormatError, WriteError
from deepmia.image import Image
from deepmia.registry import Registry

__all__ = [
    "read_image",
    "write_image",
    "format_of",
    "Format",
    "formats",
    "register_format",
    "is_image_file",
    "image_stem",
    "spacing_known",
]


@dataclass(frozen=True)
class Format:
    """A file format: its suffixes and its reader and writer (either may be None)."""

    name: str
    suffixes: tuple[str, ...]
    read: Callable[..., Image] | None = None
    write: Callable[..., None] | None = None


formats: Registry[Format] = Registry("image format")

# Built-in format modules, imported on first use. Each calls register_format() at import time.
_BUILTIN_MODULES = {
    "nifti": ((".nii", ".nii.gz"), "deepmia.io.nifti"),
    "nrrd": ((".nrrd", ".nhdr"), "deepmia.io.itk"),
    "metaimage": ((".mha", ".mhd"), "deepmia.io.itk"),
    "png": ((".png",), "deepmia.io.raster"),
    "jpeg": ((".jpg", ".jpeg"), "deepmia.io.raster"),
    "tiff": ((".tif", ".tiff"), "deepmia.io.raster"),
    "gif": ((".gif",), "deepmia.io.raster"),
    "numpy": ((".npy", ".npz"), "deepmia.io.numpy"),
    "dicom": ((".dcm", ".dicom", ".ima"), "deepmia.io.dicom"),
}


def register_format(fmt: Format) -> Format:
    """Register a format (used by format modules; plug-ins may add their own)."""
    return formats.register(fmt.name)(fmt)


def _suffix_of(path: Path) -> str:
    name = path.name.lower()
    for suffixes, _ in _BUILTIN_MODULES.values():
        for s in suffixes:
            if name.endswith(s) and len(s) > 4:  # multi-part suffixes first (.nii.gz)
                return s
    return path.suffix.lower()


def _known_suffixes() -> set[str]:
    known = {s for suffixes, _ in _BUILTIN_MODULES.values() for s in suffixes}
    return known | {s for name in formats.names() for s in formats.get(name).suffixes}


def spacing_known(image: Image) -> bool:
    """Whether ``image``'s voxel spacing is physical (mm), i.e. its reader did not set ``meta["spacing_unknown"]``.

    A DICOM file with missing or zero PixelSpacing is read on an identity affine (1 unit = 1 pixel) and flagged
    ``meta["spacing_unknown"] = True``: a model trained on physical spacing must refuse or warn.
    """
    return not image.meta.get("spacing_unknown", False)


def is_image_file(path: str | PathLike[str]) -> bool:
    """Whether ``path`` is a file whose suffix names a format deepmia reads (by name only; nothing is opened)."""
    p = Path(path)
    return p.is_file() and _suffix_of(p) in _known_suffixes()


def image_stem(path: str | PathLike[str]) -> str:
    """The file name without its image suffix (``case_01.nii.gz`` -> ``case_01``); other names unchanged."""
    p = Path(path)
    suffix = _suffix_of(p)
    return p.name[: -len(suffix)] if suffix and suffix in _known_suffixes() else p.name


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def format_of(path: str | PathLike[str], *, must_exist: bool = True) -> str:
    """Name of the format of ``path`` from its suffix, or its content; a folder is ``"dicom"``.

    Raises:
        UnsupportedFormatError: No registered format handles this path.
    """
    p = Path(path)
    if must_exist and p.is_dir():
        return "dicom"
    suffix = _suffix_of(p)
    for name, (suffixes, _) in _BUILTIN_MODULES.items():
        if suffix in suffixes:
            return name
    for name in formats:
        if suffix in formats.get(name).suffixes:
            return name
    if must_exist and p.is_file() and _looks_like_dicom(p):
        return "dicom"
    known = sorted({s for sfx, _ in _BUILTIN_MODULES.values() for s in sfx})
    raise UnsupportedFormatError(
        f"unknown image format (suffix {suffix or 'none'!r})", path=p, fix=f"known suffixes: {', '.join(known)}"
    )


def _load(name: str) -> Format:
    if name not in formats and name in _BUILTIN_MODULES:
        module = _BUILTIN_MODULES[name][1]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"the {name} reader/writer could not be loaded: {exc}",
                fix="reinstall deepmia with its dependencies: bash scripts/install.sh",
            ) from exc
    return formats.get(name)


def read_image(path: str | PathLike[str], **options: Any) -> Image:
    """Read an image file, or a DICOM series folder, into an :class:`~deepmia.image.Image`.

    Args:
        path: A file in any supported format, or a folder holding one DICOM series.
        **options: Format-specific options (e.g. ``series_uid=`` for a DICOM folder with several series).

    Raises:
        ReadError: The path does not exist or cannot be read (subclasses say why).
        UnsupportedFormatError: The format is not recognised.
        GeometryError: The image's geometry cannot be trusted.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError("no such file or folder", path=p)
    fmt = _load(format_of(p))
    if fmt.read is None:
        raise UnsupportedFormatError(f"{fmt.name} files can be written but not read", path=p)
    image = fmt.read(p, **options)
    image.meta.setdefault("source", str(p))
    return image


def write_image(image: Image, path: str | PathLike[str], *, format: str | None = None, **options: Any) -> None:
    """Write ``image`` to ``path`` in the format its suffix names, or ``format`` (parent folders are created).

    A DICOM series is a folder: pass ``format="dicom"`` with a folder path.

    Raises:
        UnsupportedFormatError: The suffix names no writable format.
        WriteError: The image cannot be represented in that format (e.g. a 3D volume as PNG).
    """
    p = Path(path)
    fmt = _load(format or format_of(p, must_exist=False))
    if fmt.write is None:
        raise UnsupportedFormatError(f"{fmt.name} files can be read but not written", path=p)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fmt.write(image, p, **options)
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, WriteError):
            raise
        raise WriteError(f"could not write {fmt.name}: {exc}", path=p) from exc
