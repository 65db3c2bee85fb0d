"""The ``medmnist`` importer: a MedMNIST v2 ``.npz`` file as a classification dataset with its official split."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepmia.data._importing import ImportReport, Progress, Writer, importers, save_dataset
from deepmia.data.dataset import Channel, Dataset
from deepmia.errors import DatasetError

__all__ = ["import_medmnist", "MEDMNIST_CLASSES", "MEDMNIST_POSITIVE"]

#: Class names (index order) and modality of the MedMNIST v2 files whose names we know (medmnist INFO).
MEDMNIST_CLASSES: dict[str, tuple[list[str], str]] = {
    "pneumoniamnist": (["normal", "pneumonia"], "DX"),
    "breastmnist": (["malignant", "normal, benign"], "US"),
    "adrenalmnist3d": (["normal", "hyperplasia"], "CT"),
    "nodulemnist3d": (["benign", "malignant"], "CT"),
    "vesselmnist3d": (["vessel", "aneurysm"], "MR"),
    "synapsemnist3d": (["inhibitory synapse", "excitatory synapse"], "OT"),
    "fracturemnist3d": (["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"], "CT"),
}
#: The positive (disease) class of the binary MedMNIST files, written to ``dataset.json`` as ``positive_class``.
MEDMNIST_POSITIVE = {"pneumoniamnist": "pneumonia", "breastmnist": "malignant", "adrenalmnist3d": "hyperplasia",
                     "nodulemnist3d": "malignant", "vesselmnist3d": "aneurysm"}


@importers.register("medmnist")
def import_medmnist(
    src: Path,
    dst: Path,
    *,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a MedMNIST ``.npz`` file: 2D samples as PNG, 3D samples as NIfTI (1 mm voxels).

    The official train/val/test split is kept (one fold: train/val, plus test). MedMNIST has no patient
    ids, so each sample is its own patient. A label array with several columns is multi-label (``class``
    is the list of positive indices).

    Args:
        src: The ``.npz`` file (keys ``{train,val,test}_{images,labels}``).
        dst: The new dataset folder.
        classes: Class names in index order; default: the known names for this file (see ``MEDMNIST_CLASSES``).
        limit: Import only the first ``limit`` samples of each split.
        name: Dataset name (default: the file name).
        progress: Called as ``progress(done, total)``.

    Raises:
        DatasetError: Missing keys, unknown class names, or labels outside the class list.
    """
    if not src.is_file():
        raise DatasetError("MedMNIST file not found", path=src)
    key = re.sub(r"_\d+$", "", src.stem.lower())
    known = MEDMNIST_CLASSES.get(key)
    names = list(classes) if classes else (known[0] if known else None)
    if names is None:
        raise DatasetError(
            f"class names of {src.name!r} are not known (they come from the file name, e.g. breastmnist.npz)",
            path=src, fix="pass --classes with the names in index order, e.g. --classes normal,disease",
        )
    modality = known[1] if known else "OT"
    try:
        npz = np.load(src)
        data = {
            split: (npz[f"{split}_images"], npz[f"{split}_labels"])
            for split in ("train", "val", "test") if f"{split}_images" in npz
        }
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"not a MedMNIST .npz: {exc}", path=src) from exc
    if not data:
        raise DatasetError("no {train,val,test}_images arrays", path=src, fix="is this a MedMNIST file?")
    writer = Writer(dst, link=False)
    notes: list[str] = []
    total = sum(min(len(x), limit) if limit is not None else len(x) for x, _ in data.values())
    done = 0
    cases: list[dict[str, Any]] = []
    ids: dict[str, list[str]] = {}
    for split, (images, labels) in data.items():
        if len(images) != len(labels):
            raise DatasetError(f"{split}: {len(images)} images but {len(labels)} labels", path=src)
        n = len(images) if limit is None else min(limit, len(images))
        if n < len(images):
            notes.append(f"limit={limit}: {len(images) - n} {split} sample(s) not imported")
        labels2 = labels.reshape(len(labels), -1)
        multi = labels2.shape[1] > 1
        if multi and labels2.shape[1] != len(names):
            raise DatasetError(f"{labels2.shape[1]} label columns but {len(names)} class names", path=src)
        ids[split] = []
        for i in range(n):
            case_id = f"{split}_{i:05d}"
            cls: int | list[int] = (
                [int(k) for k in np.flatnonzero(labels2[i])] if multi else int(labels2[i, 0])
            )
            rel = _write_medmnist_sample(images[i], writer.root, case_id)
            cases.append({"id": case_id, "patient_id": case_id, "images": [rel], "class": cls,
                          "meta": {"medmnist_split": split, "medmnist_index": i}})
            ids[split].append(case_id)
            done += 1
            if progress:
                progress(done, total)
    splits: dict[str, Any] = {"folds": [], "test": ids.get("test", []), "meta": {"method": "official MedMNIST split"}}
    if "train" in ids and "val" in ids:
        splits["folds"] = [{"train": ids["train"], "val": ids["val"]}]
    is_rgb = next(iter(data.values()))[0].ndim == 4 and next(iter(data.values()))[0].shape[-1] == 3
    ds = Dataset.create(
        dst,
        name=name or src.stem,
        task="classification",
        channels=[Channel(name="RGB" if is_rgb else "image", modality=modality)],
        labels=names,
        cases=cases,
        license="CC BY 4.0 (MedMNIST v2, Yang et al., Scientific Data 10:41, 2023)",
        source=str(src),
        description=f"MedMNIST {src.stem}",
        splits=splits,
        positive_class=MEDMNIST_POSITIVE.get(key) if not classes and known else None,
    )
    return ImportReport(save_dataset(ds), [], notes)


def _write_medmnist_sample(sample: np.ndarray, root: Path, case_id: str) -> str:
    if sample.ndim == 2 or (sample.ndim == 3 and sample.shape[-1] == 3):
        from PIL import Image as PILImage

        rel = f"images/{case_id}.png"
        (root / "images").mkdir(exist_ok=True)
        PILImage.fromarray(np.ascontiguousarray(sample)).save(root / rel)
        return rel
    if sample.ndim == 3:
        from deepmia.image import Image
        from deepmia.io import write_image

        rel = f"images/{case_id}.nii.gz"
        write_image(Image(sample[None]), root / rel)
        return rel
    raise DatasetError(f"sample {case_id} has unsupported shape {sample.shape}", path=root)
