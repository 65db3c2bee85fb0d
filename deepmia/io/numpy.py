"""NumPy files: ``.npz`` written by deepmia (exact round trip) and plain ``.npy`` / ``.npz`` arrays.

deepmia ``.npz`` files hold ``array`` (channel first), ``affine`` (4x4 RAS+), ``kind`` and ``meta`` (a JSON
string), so pixels, dtype, geometry, kind and JSON-representable metadata come back exactly (other metadata
values are stored as their text).

A plain array carries no geometry and no channel axis, so one rule decides (identity affine, 1 mm voxels):

* 2D ``(X, Y)`` and 3D ``(X, Y, Z)`` arrays are single-channel images; a channel axis is added;
* 4D arrays are channel first, ``(C, X, Y, Z)``.

So a 2D RGB picture must be stored channel first as a 4D ``(3, X, Y, 1)`` array, or better as PNG/TIFF.
A plain ``.npz`` with one array is read by that rule; with several, choose one with ``key=``. Dataset
archives such as MedMNIST (``train_images``, ``val_labels``, ...) are not images: import them with
``deepmia dataset import medmnist``.

``.npy`` holds pixels only, so writing one refuses an image whose affine is not the identity (write
``.npz``), and a multi-channel 2D image (it would read back as a volume).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.errors import CorruptFileError, DeepmiaError, UnsupportedFormatError, WriteError
from deepmia.image import Image, Kind
from deepmia.io import Format, register_format
from deepmia.io._common import build_image

_DEEPMIA_KEYS = {"array", "affine", "kind", "meta"}
_SPLIT_PREFIXES = ("train_", "val_", "test_")


def _plain(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """A plain array as channel-first pixels by the documented rule."""
    if arr.dtype.hasobject or arr.dtype.names:
        raise UnsupportedFormatError(f"{what} has dtype {arr.dtype}, not numeric pixels", path=path)
    if arr.ndim in (2, 3):
        return arr[None]
    if arr.ndim == 4:
        return arr
    raise UnsupportedFormatError(
        f"{what} has shape {arr.shape}; expected (X, Y), (X, Y, Z) or channel-first (C, X, Y, Z)", path=path
    )


def read(path: Path, *, kind: Kind | None = None, key: str | None = None, **_: Any) -> Image:
    """Read a ``.npy`` or ``.npz`` file (see the module docstring for the axis rule).

    Args:
        path: The file.
        kind: ``"label"`` or ``"intensity"``; ``None`` follows a deepmia ``.npz``'s ``kind`` (else intensity).
        key: Which array of a plain ``.npz`` holding several to read.

    Raises:
        CorruptFileError: The file is damaged or not a NumPy file.
        UnsupportedFormatError: The file holds no image (a dataset archive, object arrays, a bad shape), or
            several arrays and no ``key``.
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise CorruptFileError("not a NumPy .npy or .npz file (its first bytes are neither)", path=path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return _image(_plain(loaded, path, "the array"), np.eye(4), kind, None, {}, path)
        with loaded:
            keys = list(loaded.files)
            if _DEEPMIA_KEYS <= set(keys) and key is None:
                meta = json.loads(str(loaded["meta"]))
                return _image(loaded["array"], loaded["affine"], kind, str(loaded["kind"]), meta, path)
            if key is None and any(k.startswith(_SPLIT_PREFIXES) for k in keys):
                raise UnsupportedFormatError(
                    f"a dataset archive with arrays {', '.join(keys)}, not an image",
                    path=path, fix="import it with: deepmia dataset import medmnist",
                )
            if key is None and len(keys) != 1:
                raise UnsupportedFormatError(
                    f"holds {len(keys)} arrays ({', '.join(keys)}); which one is the image?",
                    path=path, fix="pass key=NAME to read_image",
                )
            name = key if key is not None else keys[0]
            if name not in keys:
                raise UnsupportedFormatError(f"has no array {name!r} (arrays: {', '.join(keys)})", path=path)
            return _image(_plain(loaded[name], path, f"array {name!r}"), np.eye(4), kind, None, {}, path)
    except DeepmiaError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CorruptFileError(f"not a readable NumPy file: {exc}", path=path) from exc


def _image(arr: np.ndarray, affine: np.ndarray, kind: Kind | None, file_kind: str | None,
           meta: dict[str, Any], path: Path) -> Image:
    return build_image(arr, affine, kind=kind, file_kind=file_kind, meta={**meta, "format": "numpy"}, path=path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    return str(value)


def write(image: Image, path: Path, **_: Any) -> None:
    """Write ``.npz`` (pixels, affine, kind and metadata; compressed) or ``.npy`` (pixels only).

    Raises:
        WriteError: A ``.npy`` would lose the affine or read back with other axes.
    """
    if path.name.lower().endswith(".npz"):
        meta = {k: v for k, v in image.meta.items() if k not in ("format", "source")}
        np.savez_compressed(
            path, array=image.array, affine=np.asarray(image.affine), kind=np.str_(image.kind),
            meta=np.str_(json.dumps(meta, default=_json_default)),
        )
        return
    if not np.allclose(image.affine, np.eye(4)):
        raise WriteError(
            f"a .npy file holds no geometry, and this image's affine is not the identity (spacing {image.spacing} mm)",
            path=path, fix="write .npz, which keeps the affine",
        )
    if image.spatial_dims == 2 and image.num_channels > 1:
        raise WriteError(
            f"a {image.num_channels}-channel 2D image in .npy would read back as a 3D volume",
            path=path, fix="write .npz, .png or .tif",
        )
    np.save(path, image.array[0] if image.num_channels == 1 else image.array, allow_pickle=False)


register_format(Format("numpy", (".npy", ".npz"), read=read, write=write))
