"""The label -> code table of DICOM SEG segments and SR findings (``deepmia/report/codes.json``), and its codes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError

__all__ = ["load_codes", "concept", "label_code", "STRUCTURE", "FINDING"]


def load_codes(model_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The label -> code table: the shipped ``deepmia/report/codes.json``, overridden by ``MODEL_DIR/codes.json``.

    Raises:
        InvalidArgumentError: The model's ``codes.json`` is not a JSON object of label entries.
    """
    table = json.loads(resources.files("deepmia.report").joinpath("codes.json").read_text(encoding="utf-8"))
    own = Path(model_dir) / "codes.json" if model_dir is not None else None
    if own is not None and own.is_file():
        try:
            extra = json.loads(own.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError(f"not valid JSON: {exc}", path=own, fix="fix the file or remove it") from None
        if not isinstance(extra, dict):
            raise InvalidArgumentError("codes.json must be an object of label -> codes", path=own)
        table |= extra
    return {k: v for k, v in table.items() if not k.startswith("_")}


def concept(triple: Sequence[str]) -> Any:
    """A ``highdicom.sr.CodedConcept`` of a (value, scheme, meaning) triple."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = triple
    return CodedConcept(value=str(value), scheme_designator=str(scheme), meaning=str(meaning))


STRUCTURE, FINDING = ["91723000", "SCT", "Anatomical Structure"], ["404684003", "SCT", "Finding"]


def label_code(name: str, codes: Mapping[str, Any], category: Sequence[str] = STRUCTURE) -> dict[str, Any]:
    """Codes of label ``name``; a label missing from the table gets a local (99DEEPMIA) placeholder type."""
    entry = codes.get(name) or codes.get(name.lower())
    if entry:
        return entry
    return {"category": list(category), "type": [name[:16], "99DEEPMIA", name[:64]],
            "note": "placeholder: no code in the table"}
