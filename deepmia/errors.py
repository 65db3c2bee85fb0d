"""Typed errors for deepmia.

Every error raised for bad input is a :class:`DeepmiaError`. Its message names the file (when there is one),
the problem, and, where we know it, the fix. The CLI prints the message on one line and exits non-zero.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "DeepmiaError",
    "InvalidArgumentError",
    "ReadError",
    "CorruptFileError",
    "UnsupportedFormatError",
    "MissingDependencyError",
    "MissingCodecError",
    "GeometryError",
    "SeriesError",
    "WriteError",
    "DatasetError",
    "SplitLeakageError",
    "CatalogError",
    "ExportError",
]


class DeepmiaError(Exception):
    """Base class of every error deepmia raises for bad input.

    Args:
        problem: What is wrong, in one sentence.
        path: The file or folder the problem is in, if any.
        fix: What the user can do about it, if known.
    """

    def __init__(self, problem: str, *, path: str | PathLike[str] | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        if self.fix:
            text = f"{text} ({self.fix})"
        return text

    def __reduce__(self):  # keep errors picklable across worker processes
        return (_rebuild, (type(self), self.problem, self.path, self.fix))


def _rebuild(cls, problem, path, fix):
    return cls(problem, path=path, fix=fix)


class InvalidArgumentError(DeepmiaError, ValueError):
    """An argument has a value outside what the function accepts."""


class ReadError(DeepmiaError, OSError):
    """A file or folder could not be read as an image."""


class CorruptFileError(ReadError):
    """A file is truncated, damaged or not in the format its name claims."""


class UnsupportedFormatError(ReadError):
    """No reader or writer handles this file's format."""


class MissingDependencyError(DeepmiaError, ImportError):
    """An optional package needed for this operation is not installed."""


class MissingCodecError(ReadError):
    """The pixel data uses a compression no installed decoder handles."""


class GeometryError(DeepmiaError):
    """Image geometry is inconsistent or cannot be trusted (it is refused, not guessed)."""


class SeriesError(ReadError):
    """A folder does not hold exactly one consistent image series."""


class WriteError(DeepmiaError, OSError):
    """An image could not be written."""


class DatasetError(DeepmiaError):
    """A dataset folder or its dataset.json is invalid."""


class SplitLeakageError(DatasetError):
    """A split puts one patient on more than one side."""


class CatalogError(DeepmiaError):
    """The catalog database could not be opened, migrated or updated."""


class ExportError(DeepmiaError):
    """A network could not be exported to a portable format (e.g. an operator ONNX cannot express)."""
