r"""The ``folder`` importer: a classification dataset from one sub-folder of images per class.

::

    SRC/benign/benign (1).png       SRC/benign/benign (1)_mask.png     SRC/all_captions.csv
    SRC/malignant/malignant (1).png ...

Every file is accounted for in the import report: images become cases; lesion masks beside their image (a name
that ends in ``_mask``, ``_mask_1``, ``-mask`` ...) are paired with it (copied to ``masks/`` and listed in the case's
``meta["masks"]``), never taken as class images; a mask without its image, a file that is not an image, a hidden
file, a file beside the class folders (a captions CSV) and a file matched by an ``exclude`` pattern are skipped,
each with its reason.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepmia.data._importing import (
    ImportReport,
    Progress,
    Writer,
    channels_from,
    file_stem,
    importers,
    require_dir,
    save_dataset,
)
from deepmia.data.dataset import Channel, Dataset
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.io import is_image_file

__all__ = ["import_folder", "mask_base", "patient_pattern"]

#: A mask's stem: the image's stem, then ``_mask`` / ``-mask`` / `` mask`` and an optional number (``_mask_1``).
MASK_STEM = re.compile(r"^(?P<base>.+?)[ _-]mask(?:[ _-]?\d+)?$", re.IGNORECASE)


def mask_base(path: Path) -> str | None:
    """The stem of the image a mask file belongs to (``benign (1)`` for ``benign (1)_mask_1.png``), else None."""
    m = MASK_STEM.match(file_stem(path))
    return m.group("base") if m else None


def patient_pattern(patient_regex: str | None) -> re.Pattern[str] | None:
    """The compiled ``patient_regex`` (its group 1 is the patient id).

    Raises:
        InvalidArgumentError: Not a regular expression, or one without a group.
    """
    if not patient_regex:
        return None
    try:
        pattern = re.compile(patient_regex)
    except re.error as exc:
        raise InvalidArgumentError(f"patient_regex {patient_regex!r} is not a regular expression: {exc}") from None
    if pattern.groups < 1:
        raise InvalidArgumentError(f"patient_regex {patient_regex!r} needs a group, e.g. '^(\\w+?)_'")
    return pattern


def patient_of(pattern: re.Pattern[str] | None, text: str, case_id: str, *, path: Any = None) -> str:
    """The patient id ``pattern`` finds in ``text`` (the case id itself without a pattern).

    Raises:
        DatasetError: ``text`` does not match.
    """
    if pattern is None:
        return case_id
    match = pattern.search(text)
    if match is None or not match.group(1):
        raise DatasetError(f"case {case_id!r}: {text!r} does not match patient_regex {pattern.pattern!r}", path=path,
                           fix="change --patient-regex so its group 1 finds the patient in every name")
    return match.group(1)


def _class_files(
    src: Path, names: list[str], exclude: Sequence[str], skipped: list[tuple[str, str]],
) -> tuple[list[tuple[int, Path]], dict[tuple[Path, str], list[Path]]]:
    """Image files by class, masks by (folder, image stem); everything else goes to ``skipped`` with its reason."""
    files: list[tuple[int, Path]] = []
    masks: dict[tuple[Path, str], list[Path]] = {}
    def left_out(p: Path) -> bool:
        """Whether ``p`` is excluded or hidden (reported as such); the same rule at the root and in classes."""
        rel = p.relative_to(src).as_posix()
        hit = next((pat for pat in exclude if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(p.name, pat)), None)
        if hit is not None:
            skipped.append((rel, f"excluded by --exclude {hit!r}"))
        elif p.name.startswith("."):
            skipped.append((rel, "hidden file"))
        return hit is not None or p.name.startswith(".")

    for p in sorted(src.iterdir()):
        if p.is_file() and not left_out(p):
            skipped.append((p.name, "a file beside the class folders, not in a class"))
    for k, cls in enumerate(names):
        for p in sorted((src / cls).rglob("*")):
            if not p.is_file() or left_out(p):
                continue
            rel = p.relative_to(src).as_posix()
            if not is_image_file(p):  # the io format registry: what read_image reads
                skipped.append((rel, "not an image file (by suffix)"))
            elif (base := mask_base(p)) is not None:
                masks.setdefault((p.parent, base), []).append(p)
            else:
                files.append((k, p))
    stems = {(p.parent, file_stem(p)) for _, p in files}
    for (folder, base), paths in masks.items():
        if (folder, base) not in stems:
            skipped += [(p.relative_to(src).as_posix(), f"a mask (name ends in 'mask') whose image {base!r} is not "
                         "in its folder: not a class image") for p in paths]
    return files, masks


@importers.register("folder")
def import_folder(
    src: Path,
    dst: Path,
    *,
    link: bool = False,
    classes: Sequence[str] | None = None,
    patient_regex: str | None = None,
    channels: Sequence[Channel | Mapping[str, Any] | str] | None = None,
    exclude: Sequence[str] = (),
    name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    r"""Import a classification folder ``src/<class>/<image>`` (PNG, JPEG, TIFF, NIfTI, DICOM, ...).

    Args:
        src: The folder holding one sub-folder per class.
        dst: The new dataset folder.
        link: Symlink files instead of copying them.
        classes: Class names in index order (each must be a sub-folder); default: the sub-folders, sorted.
        patient_regex: A regular expression whose first group, searched in the file name, is the patient id
            (e.g. ``"^(person\d+)_"``); default: each image is its own patient.
        channels: Channels (``"NAME:MODALITY"``); default one ``image:OT`` (an RGB file is one channel file that
            the classification plan gives three network inputs).
        exclude: Glob patterns (``"*_mask*.png"``, ``"benign/old/*"``) matched against each file's path relative
            to ``src`` and its name; matching files are skipped and reported.
        name: Dataset name (default: the folder name).
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: A named class has no folder, a sub-folder is not a named class, a file name does not
            match ``patient_regex``, or two files give the same case id.
        InvalidArgumentError: A bad ``patient_regex``.
    """
    require_dir(src, "class")
    folders = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(classes) if classes else folders
    missing = [c for c in names if c not in folders]
    if missing:
        raise DatasetError(f"class folder(s) {missing} not found", path=src)
    extra = [f for f in folders if f not in names]
    if extra:
        raise DatasetError(f"sub-folder(s) {extra} are not among the classes {names}", path=src,
                           fix="add them to classes or move them out")
    pattern = patient_pattern(patient_regex)
    skipped: list[tuple[str, str]] = []
    files, masks = _class_files(src, names, list(exclude), skipped)
    writer = Writer(dst, link=link)
    cases = []
    paired = 0
    for i, (k, p) in enumerate(files):
        rel_src = p.relative_to(src / names[k])
        case_id = f"{names[k]}/{rel_src.parent.as_posix()}/{file_stem(p)}".replace("/./", "/")
        patient = patient_of(pattern, p.name, case_id, path=p)
        rel = writer.put(p, f"images/{names[k]}/{rel_src.as_posix()}")
        case: dict[str, Any] = {"id": case_id, "patient_id": patient, "images": [rel], "class": k}
        own = masks.get((p.parent, file_stem(p)), [])
        if own:
            case["meta"] = {"masks": [writer.put(m, f"masks/{names[k]}/{m.relative_to(src / names[k]).as_posix()}")
                                      for m in own]}
            paired += len(own)
        cases.append(case)
        if progress:
            progress(i + 1, len(files))
    notes = [f"{paired} mask file(s) paired with their image as lesion masks (case meta 'masks'), not imported as "
             "class images"] if paired else []
    ds = Dataset.create(dst, name=name or src.name, task="classification",
                        channels=channels_from(channels, [Channel(name="image")]), labels=names, cases=cases,
                        source=str(src))
    return ImportReport(save_dataset(ds), skipped, notes)
