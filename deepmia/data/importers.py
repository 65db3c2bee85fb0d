"""Importers: turn public dataset layouts into a deepmia dataset folder (``dataset.json`` plus files).

Each importer is registered by format name (``msd``, ``medmnist``, ``folder``, ``voc``, ``coco``, ``dicom``)
and returns an :class:`ImportReport` that lists what was imported and, item by item, what was not and why.
Nothing is dropped silently. Files are copied by default, or symlinked with ``link=True``; formats that need
conversion (MedMNIST arrays, DICOM series) always write new files.

Detection boxes are stored in the convention of :class:`~deepmia.data.dataset.Box`. Boxes partly outside
their image are clipped to it and every clipped box is reported; a box that is empty after clipping (zero
area, or wholly outside) is refused with a :class:`~deepmia.errors.DatasetError` naming the case.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from deepmia.data._importing import (
    ImportReport,
    Progress,
    Writer,
    channels_from,
    file_stem,
    full_suffix,
    importers,
    parse_label_names,
    require_dir,
    save_dataset,
)
from deepmia.data.dataset import Box, Channel, Dataset
from deepmia.errors import DatasetError, DeepmiaError, InvalidArgumentError

__all__ = ["ImportReport", "importers", "import_dataset", "MEDMNIST_CLASSES", "Progress",
           "import_medmnist", "import_folder", "import_pairs"]





def import_dataset(fmt: str, src: str | PathLike[str], dst: str | PathLike[str], **options: Any) -> ImportReport:
    """Import ``src`` in format ``fmt`` into a new dataset folder ``dst``.

    Raises:
        InvalidArgumentError: Unknown format, or an option that format does not take.
        DatasetError: The source is invalid; the message names the case and the problem.
    """
    import inspect

    func = importers.get(fmt)
    accepted = set(inspect.signature(func).parameters) - {"src", "dst"}
    extra = sorted(set(options) - accepted)
    if extra:
        raise InvalidArgumentError(
            f"option(s) {', '.join(extra)} do not apply to format {fmt!r}; it takes {', '.join(sorted(accepted))}"
        )
    return func(Path(src), Path(dst), **options)


# --------------------------------------------------------------------------- shared helpers
def _raster_shape(path: Path) -> list[int]:
    """Spatial shape ``[X, Y]`` (= width, height) of a raster image, from its header only."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image header: {exc}", path=path) from exc
    return [int(width), int(height)]


def _clip_box(
    box: list[float], shape: Sequence[int], *, where: str, label: str, path: Path, notes: list[str]
) -> list[float]:
    """Clip ``box`` to ``[0, shape]``; report a clip in ``notes``; refuse a box empty before or after."""
    n = len(box) // 2
    if any(box[d + n] <= box[d] for d in range(n)):
        raise DatasetError(f"{where}: box {box} ({label}) has zero or negative size", path=path)
    clipped = [max(0.0, min(float(v), float(shape[i % n]))) for i, v in enumerate(box)]
    if any(clipped[d + n] <= clipped[d] for d in range(n)):
        raise DatasetError(f"{where}: box {box} ({label}) lies outside the image of shape {list(shape)}", path=path)
    if clipped != [float(v) for v in box]:
        notes.append(f"{where}: box {box} ({label}) clipped to {clipped} (image shape {list(shape)})")
    return clipped


# --------------------------------------------------------------------------- MSD
def _nifti_shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise DatasetError(f"cannot read NIfTI header: {exc}", path=path) from exc


def _msd_pairs(
    src: Path, skipped: list[tuple[str, str]], notes: list[str],
) -> tuple[dict[str, Any], list[tuple[str, Path, Path]], list[Channel]]:
    """MSD's ``dataset.json`` (or ``{}``), the (case id, image, label map) triples found, and the default channels.

    Raises:
        DatasetError: No ``dataset.json`` and no ``imagesTr``/``labelsTr`` (or ``images``/``labels``) folders.
    """
    msd_json = src / "dataset.json"
    meta: dict[str, Any] = {}
    pairs: list[tuple[str, Path, Path]] = []
    if msd_json.exists():
        meta = json.loads(msd_json.read_text(encoding="utf-8"))
        pairs = []
        for entry in meta.get("training", []):
            image, label = src / entry["image"], src / entry["label"]
            item = file_stem(image)
            if not image.exists():
                skipped.append((str(image.relative_to(src)), "listed in dataset.json but the image file is missing"))
            elif not label.exists():
                skipped.append((str(label.relative_to(src)), "listed in dataset.json but the label file is missing"))
            else:
                pairs.append((item, image, label))
        n_test = len(meta.get("test", []))
        if n_test:
            notes.append(f"{n_test} test image(s) without labels (imagesTs) not imported")
        modality = meta.get("modality") or {}
        default_channels = [Channel(name=str(modality[k]), modality=_msd_modality(str(modality[k]))) for k in
                            sorted(modality, key=int)] or [Channel(name="image")]
    else:
        image_dir = next((src / d for d in ("imagesTr", "images") if (src / d).is_dir()), None)
        label_dir = next((src / d for d in ("labelsTr", "labels") if (src / d).is_dir()), None)
        if image_dir is None or label_dir is None:
            raise DatasetError(
                "no dataset.json and no imagesTr/labelsTr (or images/labels) folders", path=src,
                fix="point to an MSD task folder",
            )

        def by_stem(folder: Path) -> dict[str, Path]:
            return {
                file_stem(p): p for p in folder.iterdir()
                if p.is_file() and full_suffix(p) in (".nii", ".nii.gz") and not p.name.startswith(".")
            }

        images, label_maps = by_stem(image_dir), by_stem(label_dir)
        for item in sorted(set(images) - set(label_maps)):
            skipped.append((str(images[item].relative_to(src)), "image without a label map"))
        for item in sorted(set(label_maps) - set(images)):
            skipped.append((str(label_maps[item].relative_to(src)), "label map without an image"))
        pairs = [(item, images[item], label_maps[item]) for item in sorted(set(images) & set(label_maps))]
        default_channels = [Channel(name="image")]
    return meta, pairs, default_channels


@importers.register("msd")
def import_msd(
    src: Path,
    dst: Path,
    *,
    link: bool = False,
    limit: int | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | Sequence[str] | str | None = None,
    channels: Sequence[Channel | Mapping[str, Any] | str] | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a Medical Segmentation Decathlon task folder (or an ``images/`` + ``labels/`` folder).

    With ``src/dataset.json`` (MSD), its ``training`` list, ``labels``, ``modality``, licence and
    description are used; a 4D image with several modalities is split into one NIfTI file per channel.
    Without it, images in ``imagesTr/`` or ``images/`` are matched to label maps in ``labelsTr/`` or
    ``labels/`` by file name, and ``labels`` (value -> name) must be given. An image without a label map, or
    a label map without an image, is reported in ``skipped``. MSD has no patient ids: each case is its own
    patient.

    Args:
        src: The task folder.
        dst: The new dataset folder (must not exist, or be empty).
        link: Symlink files instead of copying them (single-channel images and all label maps).
        limit: Import only the first ``limit`` matched cases (sorted by id), e.g. for a trial run.
        name: Dataset name (default: MSD ``name``, else the folder name).
        labels: Label names (``{"0": "background", ...}`` or ``"0=background,1=..."``); overrides MSD's.
        channels: Channels (``"NAME:MODALITY"``); default from MSD ``modality``, else one ``image:OT``.
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: Missing folders, no label names, or a label map whose shape differs from its image.
    """
    require_dir(src, "MSD task")
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    meta, pairs, default_channels = _msd_pairs(src, skipped, notes)
    label_names = parse_label_names(labels) or (
        {str(k): str(v) for k, v in meta["labels"].items()} if "labels" in meta else None
    )
    if label_names is None:
        raise DatasetError("no label names", path=src, fix="pass labels, e.g. '0=background,1=anterior,2=posterior'")
    chans = channels_from(channels, default_channels)
    pairs.sort(key=lambda p: p[0])
    if limit is not None:
        if len(pairs) > limit:
            notes.append(f"limit={limit}: {len(pairs) - limit} further matched case(s) not imported")
        pairs = pairs[:limit]

    writer = Writer(dst, link=link)
    cases = []
    for i, (item, image, label) in enumerate(pairs):
        ishape, lshape = _nifti_shape(image), _nifti_shape(label)
        spatial = ishape[:3] if len(chans) > 1 else ishape
        if spatial != lshape:
            raise DatasetError(
                f"case {item!r}: label map shape {lshape} differs from its image's {ishape}", path=label,
                fix="the label map must be on the image's voxel grid",
            )
        if len(chans) > 1:
            rels = _split_channels(image, dst, item, len(chans))
        else:
            rels = [writer.put(image, f"images/{item}{full_suffix(image)}")]
        cases.append(
            {"id": item, "patient_id": item, "images": rels,
             "label": writer.put(label, f"labels/{item}{full_suffix(label)}")}
        )
        if progress:
            progress(i + 1, len(pairs))
    ds = Dataset.create(
        dst,
        name=name or str(meta.get("name") or src.name),
        task="segmentation",
        channels=chans,
        labels=label_names,
        cases=cases,
        license=str(meta.get("licence") or meta.get("license") or ""),
        source=str(meta.get("reference") or src),
        description=str(meta.get("description") or ""),
    )
    return ImportReport(save_dataset(ds), skipped, notes)


def _msd_modality(name: str) -> str:
    upper = name.upper()
    if upper in ("CT", "MR", "PT", "US"):
        return upper
    if upper in ("MRI", "T1", "T1W", "T1GD", "T2", "T2W", "FLAIR", "ADC", "DWI") or "MR" in upper:
        return "MR"
    return "OT"


def _split_channels(image: Path, dst: Path, item: str, n: int) -> list[str]:
    """Write each channel of a multi-channel NIfTI as its own file; return the relative paths."""
    from deepmia.io import read_image, write_image

    img = read_image(image)
    if img.num_channels != n:
        raise DatasetError(f"case {item!r}: image has {img.num_channels} channel(s), dataset.json names {n}",
                           path=image)
    rels = []
    for c in range(n):
        rel = f"images/{item}_{c:04d}.nii.gz"
        write_image(img.with_array(img.array[c : c + 1]), dst / rel)
        rels.append(rel)
    return rels


# --------------------------------------------------------------------------- Pascal VOC
def _voc_number(obj: ET.Element, tag: str, path: Path) -> float:
    node = obj.find(f"bndbox/{tag}")
    try:
        return float(node.text)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError):
        raise DatasetError(f"object without a numeric bndbox/{tag}", path=path) from None


@importers.register("voc")
def import_voc(
    src: Path,
    dst: Path,
    *,
    link: bool = False,
    classes: Sequence[str] | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a Pascal VOC detection folder: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/*.txt``.

    VOC's 1-based inclusive corners become ``[xmin - 1, ymin - 1, xmax, ymax]``; ``difficult`` objects are
    kept with ``ignore: true``. The official ``train``/``val``/``test`` lists become the splits (one fold
    plus test). Each image is its own patient.

    Args:
        src: The VOC folder.
        dst: The new dataset folder.
        link: Symlink images instead of copying them.
        classes: Class names in index order; a box of any other class is refused. Default: every name found,
            sorted.
        name: Dataset name (default: the folder name).
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: A missing image, an empty box, a box of an unknown class, or a split list naming an
            unknown image.
    """
    ann_dir = require_dir(src / "Annotations", "VOC Annotations")
    img_dir = require_dir(src / "JPEGImages", "VOC JPEGImages")
    notes: list[str] = []
    records = []
    xmls = sorted(ann_dir.glob("*.xml"))
    for xml in xmls:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"invalid XML: {exc}", path=xml) from exc
        case_id = xml.stem
        filename = (root.findtext("filename") or "").strip() or f"{case_id}.jpg"
        image = img_dir / filename
        if not image.exists():
            raise DatasetError(f"case {case_id!r}: image {filename} not found in JPEGImages", path=xml)
        shape = _raster_shape(image)
        boxes = []
        for obj in root.findall("object"):
            label = (obj.findtext("name") or "").strip()
            raw = [_voc_number(obj, t, xml) for t in ("xmin", "ymin", "xmax", "ymax")]
            box = [raw[0] - 1, raw[1] - 1, raw[2], raw[3]]
            box = _clip_box(box, shape, where=f"case {case_id!r}", label=label, path=xml, notes=notes)
            boxes.append(Box(label=label, box=box, ignore=(obj.findtext("difficult") or "0").strip() == "1"))
        records.append((case_id, image, shape, boxes))
    ids = {r[0] for r in records}
    images_without = sorted({file_stem(p) for p in img_dir.iterdir() if p.is_file()} - ids)
    skipped = [(f"JPEGImages/{s}", "image without an annotation XML") for s in images_without]
    names = list(classes) if classes else sorted({b.label for r in records for b in r[3]})
    writer = Writer(dst, link=link)
    cases = []
    for i, (case_id, image, shape, boxes) in enumerate(records):
        rel = writer.put(image, f"images/{image.name}")
        cases.append({"id": case_id, "patient_id": case_id, "images": [rel], "boxes": boxes, "shape": shape})
        if progress:
            progress(i + 1, len(records))
    lists = {}
    for split in ("train", "val", "trainval", "test"):
        path = src / "ImageSets" / "Main" / f"{split}.txt"
        if path.exists():
            lists[split] = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
            unknown = [c for c in lists[split] if c not in ids]
            if unknown:
                raise DatasetError(f"split list names {len(unknown)} image(s) without annotation: {unknown[:5]}",
                                   path=path)
    splits: dict[str, Any] | None = None
    if lists:
        splits = {"folds": [], "test": lists.get("test", []), "meta": {"method": "official VOC ImageSets/Main"}}
        if "train" in lists and "val" in lists:
            splits["folds"] = [{"train": lists["train"], "val": lists["val"]}]
        elif "trainval" in lists:
            notes.append("only trainval.txt (no train/val lists): no fold stored; use `deepmia dataset split`")
    if notes and len(notes) > 20:
        notes = notes[:20] + [f"... and {len(notes) - 20} more notes"]
    ds = Dataset.create(dst, name=name or src.name, task="detection", channels=[Channel(name="RGB")],
                        labels=names, cases=cases, source=str(src), splits=splits)
    return ImportReport(save_dataset(ds), skipped, notes)


# --------------------------------------------------------------------------- COCO
@importers.register("coco")
def import_coco(
    src: Path,
    dst: Path,
    *,
    images: str | PathLike[str] | None = None,
    link: bool = False,
    name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a COCO instances file (``bbox`` annotations) and its images folder as a detection dataset.

    COCO ``[x, y, width, height]`` boxes (continuous pixel coordinates) become ``[x, y, x + width, y + height]``;
    ``iscrowd`` annotations are kept with ``ignore: true``. Classes are the categories in id order. Images
    without annotations become cases without boxes (counted in the notes). Each image is its own patient.

    Args:
        src: The COCO JSON file.
        dst: The new dataset folder.
        images: The images folder (default: the JSON file's folder).
        link: Symlink images instead of copying them.
        name: Dataset name (default: the JSON file name).
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: Invalid JSON, a missing image, an annotation of an unknown image or category, or an
            empty box.
    """
    try:
        coco = json.loads(src.read_text(encoding="utf-8"))
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        img_entries = coco["images"]
        anns = coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"not a COCO instances file: {exc}", path=src) from exc
    cat_name = {c["id"]: c["name"] for c in cats}
    img_dir = Path(images) if images else src.parent
    notes: list[str] = []
    by_image: dict[Any, list[dict[str, Any]]] = {e["id"]: [] for e in img_entries}
    for a in anns:
        if a.get("image_id") not in by_image:
            raise DatasetError(f"annotation {a.get('id')} refers to unknown image id {a.get('image_id')}", path=src)
        if a.get("category_id") not in cat_name:
            raise DatasetError(f"annotation {a.get('id')} has unknown category id {a.get('category_id')}", path=src)
        by_image[a["image_id"]].append(a)
    writer = Writer(dst, link=link)
    cases = []
    for i, entry in enumerate(img_entries):
        image = img_dir / entry["file_name"]
        case_id = file_stem(Path(entry["file_name"]))
        if not image.exists():
            raise DatasetError(f"case {case_id!r}: image {entry['file_name']} not found", path=img_dir)
        shape = _raster_shape(image)
        boxes = []
        for a in by_image[entry["id"]]:
            x, y, w, h = (float(v) for v in a["bbox"])
            label = cat_name[a["category_id"]]
            box = _clip_box([x, y, x + w, y + h], shape, where=f"case {case_id!r}", label=label, path=src,
                            notes=notes)
            boxes.append(Box(label=label, box=box, ignore=bool(a.get("iscrowd", 0))))
        rel = writer.put(image, f"images/{Path(entry['file_name']).name}")
        cases.append({"id": case_id, "patient_id": case_id, "images": [rel], "boxes": boxes, "shape": shape})
        if progress:
            progress(i + 1, len(img_entries))
    empty = sum(1 for c in cases if not c["boxes"])
    if empty:
        notes.append(f"{empty} image(s) without annotations imported with no boxes")
    ds = Dataset.create(dst, name=name or src.stem, task="detection", channels=[Channel(name="RGB")],
                        labels=[c["name"] for c in cats], cases=cases, source=str(src),
                        description=str((coco.get("info") or {}).get("description", "")),
                        license=", ".join(str(lic.get("name", "")) for lic in coco.get("licenses", []) or []))
    return ImportReport(save_dataset(ds), [], notes)


# --------------------------------------------------------------------------- DICOM tree
def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


@importers.register("dicom")
def import_dicom(
    src: Path,
    dst: Path,
    *,
    task: str = "unlabeled",
    name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a DICOM folder tree: one case per series, converted to NIfTI, patient id from PatientID.

    Series are found with :func:`deepmia.io.dicom.list_series` and each is read from its own files with
    :func:`deepmia.io.dicom.read_series`, so geometry is converted to RAS+ exactly once. A series
    that cannot be read as one volume (irregular spacing, mixed sizes, damaged files) is reported in
    ``skipped`` with the reader's reason, as are files that are not DICOM images. Case ids are
    ``<PatientID>_s<SeriesNumber>`` (the series UID's tail is added if that is not unique); the series and
    study UIDs, modality and description are kept in each case's ``meta``.

    Args:
        src: The DICOM folder (searched recursively).
        dst: The new dataset folder.
        task: A task that needs no per-case annotation: ``unlabeled`` (default), ``registration``,
            ``retrieval``, ``generation`` or ``forensics``.
        name: Dataset name (default: the folder name).
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: No DICOM series under ``src``.
    """
    from deepmia._validate import look_up_option
    from deepmia.io import write_image
    from deepmia.io.dicom import list_series, read_series

    look_up_option(task, ("unlabeled", "registration", "retrieval", "generation", "forensics"), what="task")
    require_dir(src, "DICOM")
    series = list_series(src)
    if not series:
        raise DatasetError("no DICOM image series found", path=src)
    skipped = [(str(Path(p).relative_to(src)) if Path(p).is_relative_to(src) else p, why)
               for p, why in series.skipped]
    writer = Writer(dst, link=False)
    cases: list[dict[str, Any]] = []
    used: set[str] = set()
    modalities = {s.modality or "OT" for s in series}
    for i, s in enumerate(series):
        patient = s.patient_id or "unknown"
        case_id = f"{_safe_id(patient)}_s{s.series_number if s.series_number is not None else 'x'}"
        if case_id in used:
            case_id = f"{case_id}_{_safe_id(s.series_uid)[-8:]}"
        folder = s.files[0].parent
        try:
            # list_series already knows the series' files: read only those, not the whole folder again
            image = read_series(s.files, series_uid=s.series_uid)
        except DeepmiaError as exc:  # a series the reader refuses (irregular, damaged, ...) is reported
            skipped.append((f"series {s.series_uid} ({s.description or 'no description'})", exc.problem))
            continue
        used.add(case_id)
        rel = f"images/{case_id}.nii.gz"
        write_image(image, writer.root / rel)
        cases.append(
            {"id": case_id, "patient_id": patient, "images": [rel],
             "meta": {"series_uid": s.series_uid, "study_uid": s.study_uid, "modality": s.modality,
                      "description": s.description, "series_number": s.series_number,
                      "source": str(folder.relative_to(src)) if folder.is_relative_to(src) else str(folder),
                      "shape": list(image.spatial_shape), "spacing_mm": [round(v, 6) for v in image.spacing]}}
        )
        if progress:
            progress(i + 1, len(series))
    ds = Dataset.create(
        dst, name=name or src.name, task=task,
        channels=[Channel(name="image", modality=modalities.pop() if len(modalities) == 1 else "OT")],
        cases=cases, source=str(src),
    )
    return ImportReport(save_dataset(ds), skipped, [])


# Importers defined in their own modules register themselves on import.
from deepmia.data.folder import import_folder  # noqa: E402
from deepmia.data.medmnist import MEDMNIST_CLASSES, import_medmnist  # noqa: E402
from deepmia.data.pairs import import_pairs  # noqa: E402
