"""deepmia: deep-learning medical image analysis, from files on disk to a clinician looking at results."""

from __future__ import annotations

from deepmia.errors import DeepmiaError
from deepmia.image import Image

__version__ = "0.1.0"

__all__ = ["Image", "DeepmiaError", "__version__", "read_image", "write_image"]


def __getattr__(name: str):  # lazy: keep `import deepmia` light
    if name in ("read_image", "write_image"):
        from deepmia import io

        return getattr(io, name)
    raise AttributeError(f"module 'deepmia' has no attribute {name!r}")
