r"""The ``pairs`` importer: a segmentation dataset from image and label files matched by path patterns.

Any layout where each case's files can be named by a pattern with an ``{id}`` placeholder imports without
code of its own::

    deepmia dataset import pairs SRC DST --labels 0=background,1=vessel --value-map 255=1 \
        --pattern 'image=training/images/{id}_training.tif' \
        --pattern 'label=training/1st_manual/{id}_manual1.gif' \
        --pattern 'roi=training/mask/{id}_training_mask.gif' \
        --pattern 'test_image=testing/images/{id}_test.tif' ...

Patterns are relative to ``SRC`` and may also hold ``*`` and ``?`` (within one path component). Image
patterns (one per channel file, in channel order) find the cases; label and ROI patterns are resolved per
case id. ``test_*`` patterns name a held-out test set, stored as the dataset's ``splits.test`` (the training
cases get patient-grouped cross-validation folds), so an official split is kept and training never sees the
test cases. The folder written::

    DST/dataset.json
    DST/images/<id>.<ext>     DST/labels/<id>.png|.nii.gz     DST/masks/<id>.png|.nii.gz   (training cases)
    DST/imagesTs/ ...         DST/labelsTs/ ...               DST/masksTs/ ...             (test cases)

Images are copied (or symlinked) unchanged; a multi-channel file (an RGB photograph) stays one file and is
one dataset channel. Label maps are rewritten: ``value_map`` turns stored values into label values (DRIVE's
0/255 into 0/1), and any value that is then not a named label is refused. An ROI (field-of-view) mask is
stored as 0/1 and named in the case's ``meta["roi"]``; evaluation can restrict its scores to it. Raster label
files (PNG, GIF, TIFF, JPEG) carry no trustworthy geometry, so a raster label map of the image's shape takes
the image's geometry (reported in the notes when the files disagreed); other formats must agree with the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data._importing import (
    ImportReport,
    Progress,
    Writer,
    channels_from,
    full_suffix,
    importers,
    parse_label_names,
    require_dir,
    save_dataset,
)
from deepmia.data.dataset import Channel, Dataset
from deepmia.data.folder import patient_of, patient_pattern
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.image import Image

__all__ = ["import_pairs", "parse_patterns", "parse_value_map"]

PATTERN_KINDS = ("image", "label", "roi", "test_image", "test_label", "test_roi")
_RASTER = (".png", ".gif", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def parse_patterns(patterns: Mapping[str, str | Sequence[str]] | Sequence[str]) -> dict[str, list[str]]:
    """Patterns by kind, from ``{"image": [...], "label": "..."}`` or ``["image=...", "label=...", ...]``.

    Raises:
        InvalidArgumentError: An unknown kind, a pattern without ``{id}``, a missing or repeated kind.
    """
    out: dict[str, list[str]] = {}
    items: list[tuple[str, str]] = []
    if isinstance(patterns, Mapping):
        for kind, value in patterns.items():
            items += [(kind, v) for v in ([value] if isinstance(value, str) else value)]
    else:
        for text in patterns:
            kind, sep, value = text.partition("=")
            if not sep:
                raise InvalidArgumentError(f"pattern {text!r}: write it as KIND=PATTERN, e.g. 'image=imgs/{{id}}.png'")
            items.append((kind.strip(), value.strip()))
    for kind, value in items:
        if kind not in PATTERN_KINDS:
            import difflib

            close = difflib.get_close_matches(kind, PATTERN_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgumentError(f"unknown pattern kind {kind!r}{hint}; kinds are {', '.join(PATTERN_KINDS)}")
        if value.count("{id}") != 1:
            raise InvalidArgumentError(f"{kind} pattern {value!r} must hold the placeholder {{id}} exactly once")
        out.setdefault(kind, []).append(value)
    for prefix in ("", "test_"):
        for kind in ("label", "roi"):
            if len(out.get(prefix + kind, [])) > 1:
                raise InvalidArgumentError(f"{prefix + kind} pattern given more than once")
        if prefix + "image" in out and prefix + "label" not in out:
            raise InvalidArgumentError(f"{prefix}image patterns need a {prefix}label pattern")
        if prefix + "image" not in out and any(k in out for k in (prefix + "label", prefix + "roi")):
            raise InvalidArgumentError(f"{prefix}label/{prefix}roi patterns need {prefix}image patterns")
    if "image" not in out:
        raise InvalidArgumentError("no image pattern: pass at least 'image=...' and 'label=...'")
    if "test_image" in out and len(out["test_image"]) != len(out["image"]):
        raise InvalidArgumentError(
            f"{len(out['image'])} image pattern(s) but {len(out['test_image'])} test_image pattern(s)",
            fix="give one test_image pattern per channel, in the same order",
        )
    return out


def parse_value_map(value_map: Mapping[int | str, int | str] | str | None) -> dict[int, int]:
    """``{stored value: label value}`` from a mapping or ``"255=1,128=2"``.

    Raises:
        InvalidArgumentError: Not integers.
    """
    if value_map is None:
        return {}
    pairs = (
        [p.partition("=")[::2] for p in value_map.split(",") if p.strip()] if isinstance(value_map, str)
        else list(value_map.items())
    )
    try:
        return {int(str(k).strip()): int(str(v).strip()) for k, v in pairs}
    except ValueError:
        raise InvalidArgumentError(f"value map {value_map!r}: write it as 'STORED=LABEL,...', e.g. '255=1'") from None


def _regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{id\}|\*|\?)", pattern)
    tokens = {"{id}": r"(?P<id>[^/]+?)", "*": r"[^/]*", "?": r"[^/]"}
    return re.compile("".join(tokens.get(p, re.escape(p)) for p in parts))


def _find_ids(src: Path, pattern: str) -> dict[str, Path]:
    """Case id -> file for every file under ``src`` matching ``pattern``."""
    regex = _regex(pattern)
    found: dict[str, Path] = {}
    for path in sorted(src.glob(pattern.replace("{id}", "*"))):
        match = regex.fullmatch(path.relative_to(src).as_posix())
        if match is None or not path.is_file():
            continue
        case_id = match.group("id")
        if case_id in found:
            raise DatasetError(f"files {found[case_id].name} and {path.name} give the same case id {case_id!r}",
                               path=src, fix="make the {id} part of the pattern unique per case")
        found[case_id] = path
    return found


def _resolve(src: Path, pattern: str, case_id: str) -> Path | None:
    """The one file that ``pattern`` names for ``case_id`` (None if there is none).

    Raises:
        DatasetError: Several files match.
    """
    glob = pattern.replace("{id}", _glob_escape(case_id))
    matches = sorted(p for p in src.glob(glob) if p.is_file())
    if len(matches) > 1:
        raise DatasetError(f"case {case_id!r}: {len(matches)} files match {pattern!r} ({matches[0].name}, ...)",
                           path=src, fix="make the pattern specific enough to name one file per case")
    return matches[0] if matches else None


def _glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped (``[*]``, ``[?]``, ``[[]``)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _adopt_geometry(image: Image, other: Image, path: Path, what: str, case_id: str, notes: list[str]) -> Image:
    """``other`` on ``image``'s grid: same shape required; a raster file takes the image's affine."""
    if other.spatial_shape != image.spatial_shape:
        raise DatasetError(
            f"case {case_id!r}: {what} shape {other.spatial_shape} differs from its image's {image.spatial_shape}",
            path=path, fix=f"the {what} must be on the image's pixel grid",
        )
    if np.allclose(other.affine, image.affine, atol=1e-3):
        return other
    if full_suffix(path) in _RASTER and other.spatial_dims == 2:
        notes.append(f"case {case_id!r}: {what} {path.name} took its image's geometry (spacing {image.spacing})")
        return Image(other.array, image.affine, kind=other.kind, meta=dict(other.meta))
    raise DatasetError(
        f"case {case_id!r}: {what} geometry (spacing {other.spacing}) differs from its image's (spacing "
        f"{image.spacing})", path=path, fix=f"resample the {what} onto the image's grid first",
    )


def _label_array(label: Image, value_map: dict[int, int], known: set[int], path: Path, case_id: str) -> np.ndarray:
    if label.num_channels != 1:
        raise DatasetError(f"case {case_id!r}: label map has {label.num_channels} channels, not 1", path=path,
                           fix="save label maps as single-channel (greyscale) images")
    arr = label.array
    if np.issubdtype(arr.dtype, np.floating) and not np.array_equal(arr, np.round(arr)):
        raise DatasetError(f"case {case_id!r}: label map has non-integer values", path=path)
    arr = arr.astype(np.int64)
    if value_map:
        values, inverse = np.unique(arr, return_inverse=True)
        mapped = np.array([value_map.get(int(v), int(v)) for v in values])
        arr = mapped[inverse].reshape(arr.shape)
    unknown = sorted(set(np.unique(arr).tolist()) - known)
    if unknown:
        raise DatasetError(
            f"case {case_id!r}: label values {unknown} (after the value map) are not among the labels {sorted(known)}",
            path=path, fix="map stored values to label values, e.g. --value-map 255=1",
        )
    return arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)


def _derived_name(rel_dir: str, case_id: str, image: Image) -> str:
    return f"{rel_dir}/{case_id}{'.png' if image.spatial_dims == 2 else '.nii.gz'}"


def _import_case(
    src: Path, writer: Writer, case_id: str, image_paths: list[Path], patterns: dict[str, list[str]], *,
    prefix: str, value_map: dict[int, int], known: set[int], notes: list[str],
) -> tuple[dict[str, Any] | None, str | None, int]:
    """One case's entry (or None and the reason it was skipped) and its image's channel count."""
    from deepmia.io import read_image, write_image

    label_path = _resolve(src, patterns[prefix + "label"][0], case_id)
    if label_path is None:
        return None, f"no label file matching {patterns[prefix + 'label'][0]!r}", 0
    roi_path = None
    if prefix + "roi" in patterns:
        roi_path = _resolve(src, patterns[prefix + "roi"][0], case_id)
        if roi_path is None:
            return None, f"no ROI file matching {patterns[prefix + 'roi'][0]!r}", 0
    images = [read_image(p) for p in image_paths]
    first = images[0]
    for p, img in zip(image_paths[1:], images[1:], strict=True):
        if not first.same_geometry(img):
            raise DatasetError(f"case {case_id!r}: channel file {p.name} is not on the first channel's grid", path=p)
    suffix_dir = "Ts" if prefix else ""
    tags = [f"_{c:04d}" if len(image_paths) > 1 else "" for c in range(len(image_paths))]
    rels = [
        writer.put(p, f"images{suffix_dir}/{case_id}{tag}{full_suffix(p)}")
        for tag, p in zip(tags, image_paths, strict=True)
    ]
    label = _adopt_geometry(first, read_image(label_path, kind="label"), label_path, "label map", case_id, notes)
    arr = _label_array(label, value_map, known, label_path, case_id)
    label_rel = _derived_name(f"labels{suffix_dir}", case_id, first)
    write_image(Image(arr, first.affine, kind="label"), writer.root / label_rel)
    case: dict[str, Any] = {"id": case_id, "patient_id": case_id, "images": rels, "label": label_rel}
    if roi_path is not None:
        roi = _adopt_geometry(first, read_image(roi_path, kind="label"), roi_path, "ROI mask", case_id, notes)
        roi_rel = _derived_name(f"masks{suffix_dir}", case_id, first)
        write_image(Image((roi.array[:1] != 0).astype(np.uint8), first.affine, kind="label"), writer.root / roi_rel)
        case["meta"] = {"roi": roi_rel}
    return case, None, first.num_channels


def _case_files(
    src: Path, kinds: dict[str, list[str]], *, limit: int | None, skipped: list[tuple[str, str]], notes: list[str],
) -> dict[str, list[tuple[str, list[Path]]]]:
    """Per set (``""`` training, ``"test_"``) the case ids found by the image patterns and their channel files.

    Raises:
        DatasetError: An image pattern matches nothing, or a case id is in both sets.
    """
    sets: dict[str, list[tuple[str, list[Path]]]] = {}
    for prefix in ("", "test_") if "test_image" in kinds else ("",):
        per_channel = [_find_ids(src, p) for p in kinds[prefix + "image"]]
        ids = sorted(per_channel[0])
        if not ids:
            raise DatasetError(f"no file matches {prefix}image pattern {kinds[prefix + 'image'][0]!r}", path=src)
        for c, found in enumerate(per_channel[1:], start=1):
            for case_id in sorted(set(ids) - set(found)):
                skipped.append((str(per_channel[0][case_id].relative_to(src)),
                                f"no channel {c} file matching {kinds[prefix + 'image'][c]!r}"))
            ids = [i for i in ids if i in found]
        if limit is not None and len(ids) > limit:
            notes.append(f"limit={limit}: {len(ids) - limit} further {prefix or 'training '}case(s) not imported")
            ids = ids[:limit]
        sets[prefix] = [(i, [found[i] for found in per_channel]) for i in ids]
    both = sorted({i for i, _ in sets[""]} & {i for i, _ in sets.get("test_", [])})
    if both:
        raise DatasetError(f"case id(s) {both[:5]} are in both the training and the test set", path=src,
                           fix="make the {id} parts differ, or keep the test files apart")
    return sets


def _dataset_channels(
    channels: Sequence[Channel | Mapping[str, Any] | str] | None, counts: set[int], n_patterns: int, src: Path,
) -> list[Channel]:
    """The dataset's channels: the user's, else ``RGB`` (3-channel files), ``image`` or ``channel<k>`` per pattern.

    Raises:
        DatasetError: Files of one pattern have different channel counts.
        InvalidArgumentError: The number of named channels differs from the number of image patterns.
    """
    if len(counts) > 1 and n_patterns == 1:
        raise DatasetError(f"image files have different channel counts {sorted(counts)}", path=src,
                           fix="convert them to one colour model (e.g. all RGB or all greyscale) first")
    default = [Channel(name="RGB" if counts == {3} and n_patterns == 1 else "image")]
    if n_patterns > 1:
        default = [Channel(name=f"channel{c}") for c in range(n_patterns)]
    chans = channels_from(channels, default)
    if len(chans) != n_patterns:
        raise InvalidArgumentError(f"{len(chans)} channel(s) named but {n_patterns} image pattern(s) given",
                                   fix="name one channel per image pattern")
    return chans


@importers.register("pairs")
def import_pairs(
    src: Path,
    dst: Path,
    *,
    patterns: Mapping[str, str | Sequence[str]] | Sequence[str],
    labels: Mapping[str, str] | Sequence[str] | str,
    value_map: Mapping[int | str, int | str] | str | None = None,
    channels: Sequence[Channel | Mapping[str, Any] | str] | None = None,
    name: str | None = None,
    folds: int = 5,
    seed: int = 0,
    link: bool = False,
    limit: int | None = None,
    patient_regex: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    r"""Import a segmentation dataset from files matched by patterns (see the module docs).

    Args:
        src: The folder the patterns are relative to.
        dst: The new dataset folder (must not exist, or be empty).
        patterns: ``KIND=PATTERN`` strings or a mapping; kinds ``image`` (one per channel file, repeatable),
            ``label``, ``roi``, and the same with ``test_`` for a held-out test set. Each holds ``{id}`` once.
        labels: Label names, ``"0=background,1=vessel"`` or ``{"0": "background", ...}``.
        value_map: Stored label value -> label value (``"255=1"``); values not listed are kept.
        channels: One ``"NAME:MODALITY"`` per image pattern; default ``RGB`` for a 3-channel 8-bit file,
            else ``image``, modality ``OT``.
        name: Dataset name (default: the folder name).
        folds: Cross-validation folds over the training cases (patient-grouped, stratified).
        seed: Seed of the folds.
        link: Symlink image files instead of copying them (label maps and masks are always written).
        limit: Import only the first ``limit`` training and ``limit`` test cases (sorted by id).
        patient_regex: A regular expression whose first group, searched in the case id (the ``{id}`` part), is
            the patient id, so one patient's cases (a child's left and right eye, ``Image_01L`` and ``Image_01R``
            with ``"^(Image_\d+)"``) stay on one side of every split; default: each case is its own patient.
        progress: Called as ``progress(done, total)``.

    Raises:
        InvalidArgumentError: Bad patterns, value map, labels or channels.
        DatasetError: No matching files, a case id in both sets, shape or value problems (naming the file), a
            case id that does not match ``patient_regex``, or a patient in both the training and the test set.
    """
    require_dir(src, "source")
    pattern = patient_pattern(patient_regex)
    kinds = parse_patterns(patterns)
    label_names = parse_label_names(labels)
    if not label_names:
        raise InvalidArgumentError("labels are required, e.g. '0=background,1=vessel'")
    known = {int(k) for k in label_names}
    vmap = parse_value_map(value_map)
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    sets = _case_files(src, kinds, limit=limit, skipped=skipped, notes=notes)
    writer = Writer(dst, link=link)
    cases: dict[str, list[dict[str, Any]]] = {"": [], "test_": []}
    counts: set[int] = set()
    total, done = sum(len(v) for v in sets.values()), 0
    for prefix, entries in sets.items():
        for case_id, image_paths in entries:
            case, reason, n_channels = _import_case(
                src, writer, case_id, image_paths, kinds, prefix=prefix, value_map=vmap, known=known, notes=notes
            )
            if case is None:
                skipped.append((str(image_paths[0].relative_to(src)), reason or ""))
            else:
                case["patient_id"] = patient_of(pattern, case_id, case_id, path=image_paths[0])
                cases[prefix].append(case)
                counts.add(n_channels)
            done += 1
            if progress:
                progress(done, total)
    if not cases[""]:
        raise DatasetError("no training case has all its files", path=src, fix="check the label/roi patterns")
    chans = _dataset_channels(channels, counts, len(kinds["image"]), src)
    train_ids = [c["id"] for c in cases[""]]
    test_ids = [c["id"] for c in cases["test_"]]
    spec_fields = {"name": name or src.name, "task": "segmentation", "channels": chans, "labels": label_names}
    ds = Dataset.create(dst, **spec_fields, cases=cases[""] + cases["test_"], source=str(src),
                        description=f"imported by 'pairs' from {src}")
    ds.set_splits(_folds(ds, train_ids, test_ids, folds=folds, seed=seed, notes=notes))
    return ImportReport(save_dataset(ds), skipped, notes)


def _folds(ds: Dataset, train_ids: list[str], test_ids: list[str], *, folds: int, seed: int,
           notes: list[str]) -> dict[str, Any]:
    """Patient-grouped, stratified folds over the training cases; the test cases as the test set."""
    from deepmia.data.splits import make_splits

    train = set(train_ids)
    subset = ds.without_cases(c.id for c in ds.cases if c.id not in train)
    splits = make_splits(subset, folds=folds, test_fraction=0.0, seed=seed)
    meta = {**splits.meta, "test": "given by the test_* patterns" if test_ids else "none"}
    if test_ids:
        notes.append(f"{len(test_ids)} test case(s) held out in splits.test; {folds} folds over {len(train_ids)}")
    return {"folds": [f.model_dump() for f in splits.folds], "test": test_ids, "meta": meta}
