"""The manifest of a batch run: one JSON line per finished case, appended by the driver only.

``OUT/manifest.jsonl`` is what makes a batch resumable: a case is done when, and only when, its line is in the
file, and its line is appended only after every output file of the case is in place (written under a temporary
name and renamed). A run killed at any point therefore leaves a manifest that lists only complete cases; the next
run reads it and predicts the others. A line cut short by the kill (no newline at its end) is ignored.

Each line holds: ``case`` (output name), ``input`` (path), ``size``/``mtime_ns`` (the input's stat, so a changed
input is predicted again), ``sha256`` (the input's bytes), ``status`` (``done`` or ``skipped``, with ``reason``),
``outputs`` (paths relative to OUT), ``part`` (the kept light result of tasks that write one table),
``measurements`` (rows of measurements.csv), ``warnings``, ``worker``, ``attempts``, ``retried``, ``seconds`` and
``finished_at`` (when its files were in place, epoch seconds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deepmia.errors import WriteError

__all__ = ["MANIFEST", "STATE_DIR", "Manifest", "input_stat"]

MANIFEST = "manifest.jsonl"
#: Folder inside OUT for the run's own state: temporary files, kept light results, attempt marks.
STATE_DIR = ".deepmia-batch"


def input_stat(paths: Iterable[Path]) -> tuple[int, int]:
    """Total size and newest modification time (ns) of an input's files: a cheap test for a changed input."""
    size, mtime = 0, 0
    for p in paths:
        st = os.stat(p)
        size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
    return size, mtime


class Manifest:
    """The cases a batch run into ``out_dir`` has finished, read from and appended to ``manifest.jsonl``.

    Args:
        out_dir: The run's output folder.

    Raises:
        WriteError: The manifest cannot be opened for appending (a read-only folder, a full disk).
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / MANIFEST
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._read()
        try:
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise WriteError(f"cannot write the batch manifest: {exc}", path=self.path,
                             fix="give an output folder you can write to") from exc

    def _read(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]  # a line cut by a kill is dropped
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "case" in record:
                self.records[record["case"]] = record
        if complete != text:  # drop the cut line, so the next line starts on its own
            with self.path.open("r+", encoding="utf-8") as f:
                f.truncate(len(complete.encode("utf-8")))

    def done(self, name: str, stat: tuple[int, int] | None = None) -> bool:
        """Whether case ``name`` is finished (done or skipped) for an input of this stat (``None``: any)."""
        record = self.records.get(name)
        if record is None:
            return False
        return stat is None or (record.get("size"), record.get("mtime_ns")) == tuple(stat)

    def add(self, record: dict[str, Any]) -> bool:
        """Append one finished case; see :meth:`add_many`."""
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[dict[str, Any]]) -> int:
        """Append finished cases, flushed and synced to disk once; returns how many were new.

        A case already recorded for the same input (a second delivery of a retried task) is never written twice.

        Raises:
            WriteError: The lines cannot be written (full disk): those cases stay not done.
        """
        new = []
        for record in records:
            old = self.records.get(record["case"])
            if old is not None and (old.get("size"), old.get("mtime_ns")) == (record.get("size"),
                                                                              record.get("mtime_ns")):
                continue
            new.append(record)
            self.records[record["case"]] = record
        if not new:
            return 0
        try:
            self._file.write("".join(json.dumps(r, default=str) + "\n" for r in new))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            for record in new:
                self.records.pop(record["case"], None)
            raise WriteError(f"cannot record {len(new)} case(s) in the batch manifest: {exc}", path=self.path,
                             fix="free disk space, then run the same command again (it resumes)") from exc
        return len(new)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
