"""``deepmia dataset import|stats|split``: build a dataset folder, describe it, split it by patient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from deepmia.cli._common import console, print_json, progress

dataset_app = typer.Typer(
    name="dataset", help="Dataset folders: import public layouts, fingerprint, patient-level splits.",
    no_args_is_help=True,
)


@contextmanager
def _bar(description: str) -> Iterator[Callable[[int, int], None]]:
    with progress(transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@dataset_app.command("import")
def import_(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="msd, pairs, medmnist, folder, voc, coco or dicom."),
    src: Path = typer.Argument(..., help="The source folder or file (a .npz for medmnist, a .json for coco)."),
    dst: Path = typer.Argument(..., help="The new dataset folder (must not exist or be empty)."),
    link: bool = typer.Option(False, "--link", help="Symlink source files instead of copying them."),
    limit: int = typer.Option(
        None, "--limit", help="msd: first N cases; pairs: first N training and N test cases; medmnist: first N "
        "samples per split.",
    ),
    name: str = typer.Option(None, "--name", help="Dataset name (default from the source)."),
    labels: str = typer.Option(None, "--labels", help="msd, pairs: label names, '0=background,1=anterior,...'."),
    pattern: list[str] = typer.Option(
        None, "--pattern", help="pairs: KIND=PATTERN with {id}, relative to SRC; KIND is image (one per channel "
        "file), label, roi, test_image, test_label or test_roi. Repeatable.",
    ),
    value_map: str = typer.Option(None, "--value-map", help="pairs: stored label value -> label value, '255=1'."),
    folds: int = typer.Option(None, "--folds", help="pairs: cross-validation folds over the training cases (5)."),
    classes: str = typer.Option(None, "--classes", help="Class names in index order, comma-separated."),
    channel: list[str] = typer.Option(None, "--channel", help="NAME:MODALITY of each channel, e.g. T1:MR."),
    patient_regex: str = typer.Option(
        None, "--patient-regex", help="folder: regex whose group 1, searched in the file name, is the patient; "
        "pairs: searched in the case id (the {id} part), e.g. '^(Image_\\d+)' puts both eyes of a child together.",
    ),
    exclude: list[str] = typer.Option(
        None, "--exclude", help="folder: skip files whose path (relative to SRC) or name matches this glob, e.g. "
        "'*_mask*.png'. Repeatable; every skipped file is listed.",
    ),
    task: str = typer.Option(None, "--task", help="dicom: unlabeled (default), registration, retrieval, ..."),
    images: Path = typer.Option(None, "--images", help="coco: the images folder (default: the JSON's folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the import summary as JSON."),
) -> None:
    """Import a public dataset layout into a deepmia dataset folder (dataset.json + files).

    Exit status: 0 every file imported, 1 some files skipped (listed; files left out by --exclude and hidden
    files do not count), 2 no case imported (the new folder is removed) or bad usage.
    """
    from deepmia.data.importers import import_dataset

    given: dict[str, Any] = {
        "link": link or None,
        "limit": limit,
        "name": name,
        "labels": labels,
        "classes": _csv(classes),
        "channels": channel or None,
        "patient_regex": patient_regex,
        "images": images,
        "task": task,
        "patterns": pattern or None,
        "value_map": value_map,
        "folds": folds,
        "exclude": exclude or None,
    }
    options = {k: v for k, v in given.items() if v is not None}
    existed = dst.exists()
    with _bar(f"importing {fmt}") as update:
        report = import_dataset(fmt, src, dst, progress=update, **options)
    summary = report.summary()
    if not summary["cases"]:
        _refuse_empty(summary, src, dst, existed)
    if as_json:
        print_json(summary)
    else:
        _print_import(summary)
    if any(not str(s["reason"]).startswith(("excluded by --exclude", "hidden file")) for s in summary["skipped"]):
        raise typer.Exit(1)


def _refuse_empty(summary: dict[str, Any], src: Path, dst: Path, existed: bool) -> None:
    """Nothing was imported: remove the dataset folder just written (it was new or empty) and say why."""
    import shutil

    from deepmia.errors import DatasetError

    for p in list(dst.iterdir()) if existed else []:  # the importer only writes into a new or empty folder
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    if not existed:
        shutil.rmtree(dst, ignore_errors=True)
    skipped = summary["skipped"]
    reasons = "".join(f"; {s['item']}: {s['reason']}" for s in skipped[:3])
    raise DatasetError(f"no case found to import ({len(skipped)} file(s) skipped{reasons})", path=src,
                       fix="check FORMAT and the folder layout (deepmia dataset import --help)")


def _print_import(summary: dict[str, Any]) -> None:
    console.print(
        f"[bold]{summary['name']}[/bold] ({summary['task']}): {summary['cases']} cases, "
        f"{summary['patients']} patients -> {summary['dataset']}"
    )
    if summary["splits"]:
        console.print(f"  splits: {summary['splits']['folds']} fold(s), {summary['splits']['test']} test cases")
    for item in summary["skipped"]:
        console.print(f"  skipped {item['item']}: {item['reason']}")
    for note in summary["notes"]:
        console.print(f"  note: {note}")


@dataset_app.command("stats")
def stats(
    directory: Path = typer.Argument(..., metavar="DIR", help="A dataset folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the fingerprint as JSON."),
) -> None:
    """Fingerprint: cases, patients, shapes, spacings, intensities, class frequencies."""
    from deepmia.data.dataset import Dataset
    from deepmia.data.stats import fingerprint

    ds = Dataset.load(directory)
    with _bar("reading cases") as update:
        fp = fingerprint(ds, progress=update)
    if as_json:
        print_json(fp)
        return
    console.print(f"[bold]{fp['name']}[/bold] ({fp['task']}): {fp['num_cases']} cases, {fp['num_patients']} patients")

    def axes(rows: list[dict[str, float] | None] | None) -> str:
        if not rows:
            return "varies"
        return " x ".join(f"{r['min']:g}-{r['max']:g} (median {r['median']:g})" for r in rows if r)

    console.print(f"  shape    {axes(fp['shape'])}")
    console.print(f"  spacing  {axes(fp['spacing'])} mm")
    for ch in fp["channels"]:
        it = ch["intensity"]
        if it:
            console.print(
                f"  channel {ch['name']} ({ch['modality']}): mean {it['mean']:.4g} std {it['std']:.4g} "
                f"range [{it['min']:.4g}, {it['max']:.4g}] p0.5-p99.5 [{it['percentile_00_5']:.4g}, "
                f"{it['percentile_99_5']:.4g}]"
            )
    labels = fp["labels"]
    if fp["task"] == "segmentation":
        for value, info in labels.items():
            console.print(
                f"  label {value} {info['name']}: {100 * info['voxel_fraction']:.3f}% of voxels, "
                f"in {info['cases_present']} cases"
            )
    elif fp["task"] == "classification":
        for cls, count in labels.items():
            console.print(f"  class {cls}: {count}")
    elif fp["task"] == "detection":
        for cls, info in labels["classes"].items():
            size = info["size"]
            extent = " x ".join(f"{s['median']:g}" for s in size) if size else "-"
            console.print(f"  class {cls}: {info['boxes']} boxes, median size {extent} px")
        console.print(f"  cases without boxes: {labels['cases_without_boxes']}")


@dataset_app.command("split")
def split(
    directory: Path = typer.Argument(..., metavar="DIR", help="A dataset folder."),
    folds: int = typer.Option(5, "--folds", help="Number of cross-validation folds (>= 2)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of cases held out for test (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same splits."),
    force: bool = typer.Option(False, "--force", help="Replace splits the dataset already has."),
    as_json: bool = typer.Option(False, "--json", help="Print the splits as JSON."),
) -> None:
    """Patient-grouped, stratified k-fold + test split, stored in dataset.json."""
    from deepmia.data.dataset import Dataset
    from deepmia.data.splits import make_splits
    from deepmia.errors import DatasetError

    ds = Dataset.load(directory)
    if ds.splits is not None and not force:
        raise DatasetError(
            "dataset already has splits", path=directory, fix="pass --force to replace them (e.g. official splits)"
        )
    with _bar("reading label maps") as update:
        splits = make_splits(ds, folds=folds, test_fraction=test_fraction, seed=seed, progress=update)
    ds.set_splits(splits)
    ds.save()
    if as_json:
        print_json(splits.model_dump(mode="json"))
        return
    console.print(f"{ds.name}: {len(splits.folds)} folds, {len(splits.test)} test cases -> {ds.root / 'dataset.json'}")
    for k, fold in enumerate(splits.folds):
        console.print(f"  fold {k}: train {len(fold.train)}  val {len(fold.val)}")


def add_commands(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(dataset_app, name="dataset")
