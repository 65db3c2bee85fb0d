"""Where the node keeps what it receives: checked instances by study and series, corrupt ones in quarantine.

Layout under the storage folder::

    incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   received, checked instances
    quarantine/<time>-<n>.dcm + .json                                       refused instances and the reason
    routing/<SeriesInstanceUID>.json                                        how a complete series was routed
    results/job-<id>/                                                       prediction outputs (dicom/ is sent)
    outbox/job-<id>-<destination>.json                                      deliveries, queued or done

An instance is checked before it is filed: it must parse as DICOM (every element decodes), carry valid study,
series and SOP instance UIDs, and hold as many uncompressed pixel bytes as its header announces. Anything else
goes to quarantine with the reason; nothing received is dropped.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from deepmia.errors import CorruptFileError

__all__ = ["Storage", "check_instance", "series_attributes", "UID_PATTERN"]

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
#: The series attributes routing rules look at.
ROUTING_KEYS = ("Modality", "BodyPartExamined", "SeriesDescription", "StudyInstanceUID", "SeriesInstanceUID",
                "Manufacturer")


def _uid(ds: Any, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value:
        raise CorruptFileError(f"no {keyword}")
    if len(value) > 64 or not UID_PATTERN.fullmatch(value):
        raise CorruptFileError(f"{keyword} {value[:80]!r} is not a valid UID")
    return value


def _check_pixels(ds: Any, syntax: str) -> None:
    if "PixelData" not in ds or syntax not in _UNCOMPRESSED:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits, samples = int(ds.BitsAllocated), int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"pixel data without a usable image description: {exc}") from None
    expected = rows * columns * samples * frames * bits
    expected = (expected + 7) // 8
    got = len(ds.PixelData)
    if got < expected:
        raise CorruptFileError(f"pixel data truncated: {got} bytes, the header announces {expected}")


def check_instance(data: bytes) -> Any:
    """The dataset of a received file (preamble + meta + dataset bytes), checked.

    Raises:
        CorruptFileError: Not parseable DICOM, an element that does not decode, a missing or invalid UID, or
            truncated pixel data (the message is the reason).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        for element in ds.iterall():  # decode every element now: a damaged value fails here, not in a viewer
            _ = element.value
    except (InvalidDicomError, EOFError) as exc:
        raise CorruptFileError(f"not readable as DICOM: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- pydicom raises many types on damaged bytes; all mean "corrupt"
        raise CorruptFileError(f"a damaged element: {type(exc).__name__}: {exc}") from None
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        _uid(ds, keyword)
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    _check_pixels(ds, syntax)
    return ds


def series_attributes(ds: Any) -> dict[str, str]:
    """The routing attributes of an instance's series (empty strings where absent)."""
    return {k: str(ds.get(k, "") or "") for k in ROUTING_KEYS}


class Storage:
    """The node's folder: files received instances, quarantines refused ones, holds results.

    Args:
        root: The storage folder (created).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.quarantine_dir = self.root / "quarantine"
        self.results = self.root / "results"
        self.routing = self.root / "routing"
        self.outbox = self.root / "outbox"
        for folder in (self.incoming, self.quarantine_dir, self.results, self.routing, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._count = 0

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        """The folder of a series' instances."""
        return self.incoming / study_uid / series_uid

    def file(self, data: bytes) -> tuple[Any, Path, bool]:
        """Check and file a received instance.

        Returns:
            The dataset, its file, and whether it is new (False: an instance already stored, overwritten).

        Raises:
            CorruptFileError: The instance was refused (see :func:`check_instance`); the caller quarantines it.
        """
        ds = check_instance(data)
        folder = self.series_dir(ds.StudyInstanceUID, ds.SeriesInstanceUID)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        new = not path.exists()
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader never sees half a file
        return ds, path, new

    def quarantine(self, data: bytes, reason: str, **context: Any) -> Path:
        """Keep a refused instance with its reason (``<time>-<n>.dcm`` and ``.json``); returns the file."""
        with self._lock:
            self._count += 1
            stem = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self._count}"
        path = self.quarantine_dir / f"{stem}.dcm"
        path.write_bytes(data)
        note = {"reason": reason, "received": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bytes": len(data), **context}
        path.with_suffix(".json").write_text(json.dumps(note, indent=1, default=str) + "\n", encoding="utf-8")
        return path

    def quarantined(self) -> list[dict[str, Any]]:
        """The quarantined instances: each note (reason, context) with its ``file``."""
        out = []
        for note in sorted(self.quarantine_dir.glob("*.json")):
            entry = json.loads(note.read_text(encoding="utf-8"))
            out.append({**entry, "file": str(note.with_suffix(".dcm"))})
        return out
