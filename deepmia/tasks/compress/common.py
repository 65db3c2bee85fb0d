"""What every compression shares: the options, the student's width rule, the teacher's split, the record.

The student's plan is the teacher's plan with every width of the network scaled by one factor: ``width`` for
distillation alone (default 0.5: filters halved), ``1 - R`` for pruning ``R``
(:func:`deepmia.engine.prune.kept_channels`), so the compressed directory is an ordinary model directory of the
same family that every command reads.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepmia.errors import DatasetError, InvalidArgumentError

__all__ = ["CompressOptions", "scaled_widths", "teacher_split", "check_cases", "check_out", "parameter_count",
           "finish_directory",
           "COMPRESSION_FILE"]

#: The record of how a compressed model was made, in its model directory.
COMPRESSION_FILE = "compression.json"


@dataclass
class CompressOptions:
    """How to compress a model.

    Attributes:
        distill: Train the student on the teacher's soft outputs (with the labels).
        prune: Fraction of channels to remove by filter L1 norm (then fine-tune), or None.
        width: Width factor of a distilled student that is not pruned (0.5 halves every width).
        time_budget_s: Wall-clock seconds for the student's training.
        temperature: Softmax temperature of the distillation targets.
        alpha: Weight of the distillation term (``1 - alpha`` for the labels' loss).
        seed: Random seed of the student.
    """

    distill: bool = True
    prune: float | None = None
    width: float = 0.5
    time_budget_s: float = 600.0
    temperature: float = 4.0
    alpha: float = 0.5
    seed: int = 0

    def check(self) -> CompressOptions:
        """Refuse options that compress nothing or make no sense.

        Raises:
            InvalidArgumentError: Neither distillation nor pruning, a ratio or width outside (0, 1), a budget,
                temperature or alpha out of range.
        """
        from deepmia.engine.prune import check_ratio

        if not self.distill and self.prune is None:
            raise InvalidArgumentError("nothing to do: give --distill, --prune R, or both",
                                       fix="e.g. deepmia compress MODEL_DIR --out SMALL_DIR --distill")
        if self.prune is not None:
            self.prune = check_ratio(self.prune)
        if not 0.0 < self.width < 1.0:
            raise InvalidArgumentError(f"student width {self.width} is not between 0 and 1 (exclusive)",
                                       fix="e.g. --width 0.5 halves every width")
        if self.time_budget_s <= 0 or self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgumentError(f"time budget ({self.time_budget_s} s) and temperature ({self.temperature}) "
                                       f"must be > 0 and alpha ({self.alpha}) in [0, 1]")
        return self

    @property
    def factor(self) -> float:
        """The width factor of the student: ``1 - prune`` when pruning, else ``width``."""
        return 1.0 - self.prune if self.prune is not None else self.width

    @property
    def method(self) -> str:
        """``distilled``, ``pruned`` or ``pruned and distilled``."""
        if self.prune is None:
            return "distilled"
        return "pruned and distilled" if self.distill else "pruned"


def scaled_widths(widths: list[int], options: CompressOptions) -> list[int]:
    """The student's widths: pruning keeps :func:`~deepmia.engine.prune.kept_channels`; distillation rounds."""
    from deepmia.engine.prune import kept_channels

    if options.prune is not None:
        return [kept_channels(int(w), options.prune) for w in widths]
    return [max(1, int(round(w * options.width))) for w in widths]


def teacher_split(model_dir: Path) -> dict[str, Any]:
    """The teacher's ``split.json`` (its training and validation case ids).

    Raises:
        InvalidArgumentError: No readable split (the student must train on the teacher's training cases).
    """
    path = model_dir / "split.json"
    try:
        split = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"no readable split.json ({exc})", path=path,
                                   fix="compress a model directory written by deepmia train") from None
    if not split.get("train") or not split.get("val"):
        raise InvalidArgumentError("split.json has no train and val case ids", path=path)
    return split


def check_cases(dataset: Any, ids: list[str], model_dir: Path) -> None:
    """Every case of the teacher's split is in the dataset.

    Raises:
        DatasetError: Some are missing (another dataset than the teacher's), naming a few.
    """
    known = {c.id for c in dataset.cases}
    missing = [c for c in ids if c not in known]
    if missing:
        raise DatasetError(
            f"{len(missing)} case(s) of the model's split.json are not in this dataset, e.g. {', '.join(missing[:3])}",
            path=dataset.root, fix=f"give the dataset {model_dir} was trained on (--dataset)")


def parameter_count(model: Any) -> int:
    """Number of parameters of a network."""
    return int(sum(p.numel() for p in model.parameters()))


def check_out(model_dir: Path, out: Path) -> None:
    """Refuse to write over the teacher or over another model directory.

    Raises:
        InvalidArgumentError: ``out`` is the teacher, or already holds a ``plan.json``.
    """
    if out.resolve() == model_dir.resolve():
        raise InvalidArgumentError("the output is the model being compressed", path=out, fix="give another --out")
    if (out / "plan.json").exists():
        raise InvalidArgumentError("the output folder is already a model directory", path=out,
                                   fix="give a new folder as --out (or remove this one)")


def finish_directory(model_dir: Path, out: Path, options: CompressOptions, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``compression.json`` and the card note of the compressed model; copy the dataset's info.

    The note goes into the card's Training section (``card_notes.json``), saying what was done from which model.
    """
    if (model_dir / "dataset_info.json").exists():
        shutil.copy(model_dir / "dataset_info.json", out / "dataset_info.json")
    record = {"teacher": str(model_dir.resolve()), "method": options.method, "options": asdict(options),
              "width_factor": options.factor, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
    (out / COMPRESSION_FILE).write_text(json.dumps(record, indent=1, default=float) + "\n")
    how = []
    if options.prune is not None:
        how.append(f"{options.prune:.0%} of the channels of every layer removed by filter L1 norm (structured "
                   "pruning), then fine-tuned")
    if options.distill:
        how.append(f"trained on the teacher's soft outputs (temperature {options.temperature:g}, weight "
                   f"{options.alpha:g}) and the labels" + ("" if options.prune is not None else
                                                           f", widths x{options.width:g} of the teacher's"))
    note = (f"**Compressed model** ({options.method}) made by `deepmia compress` from `{model_dir.name}` "
            f"({record.get('teacher_parameters', '?')} parameters -> {record.get('student_parameters', '?')}): "
            f"{'; '.join(how)}; on the teacher's training split, for at most {options.time_budget_s:.0f} s, "
            f"validated on its validation split. `{COMPRESSION_FILE}` records the recipe.")
    notes_path = out / "card_notes.json"
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    notes["Training"] = note
    notes_path.write_text(json.dumps(notes, indent=1) + "\n")
    return record
