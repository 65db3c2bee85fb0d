"""Registration commands: ``deepmia register``, ``deepmia train register``, ``deepmia evaluate register``.

:func:`register` adds them to the Typer app and its ``train``/``evaluate`` groups; :func:`predict` serves
``deepmia predict MODEL_DIR IN OUT`` for a learned registration model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from deepmia.errors import InvalidArgumentError

__all__ = ["add_commands", "predict"]


def _read(path: Path | None, *, kind: str = "intensity"):
    if path is None:
        return None
    from deepmia.io import read_image

    return read_image(path, kind=kind) if kind == "label" else read_image(path)


def _labels(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InvalidArgumentError(f"--labels must be comma-separated integers, got {text!r}") from None


def register_command(
    fixed: Path = typer.Argument(..., help="Fixed image (the result lives on its grid)."),
    moving: Path = typer.Argument(..., help="Moving image to align to FIXED."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    method: str = typer.Option("deformable", "--method", help="rigid, affine, deformable or learned."),
    model: Path = typer.Option(None, "--model", help="Trained model folder (for --method learned)."),
    moving_label: Path = typer.Option(
        None, "--moving-label", help="Label map on MOVING's grid, warped with the image."
    ),
    fixed_mask: Path = typer.Option(None, "--fixed-mask", help="Mask on FIXED's grid restricting the metric."),
    moving_mask: Path = typer.Option(None, "--moving-mask", help="Mask on MOVING's grid restricting the metric."),
    metric: str = typer.Option(
        None, "--metric", help="mse, ncc or mi (default: mi for rigid/affine, ncc for learned, mse otherwise)."
    ),
    deformable: str = typer.Option("demons", "--deformable", help="demons, diffeomorphic-demons or bspline."),
    figure: bool = typer.Option(False, "--figure", help="Write checkerboard, overlay and deformation-grid PNGs."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Register MOVING to FIXED; write the warped image, the transform and (optionally) the warped label map.

    Also writes run.json (method and options, versions, the inputs with their hashes, timings).
    """
    import time

    from deepmia.cli._common import console, print_json
    from deepmia.engine.batch import InputItem, write_record
    from deepmia.tasks.register.predict import Predictor

    started = time.time()
    options: dict[str, Any] = {}
    if method != "learned":
        options["deformable"] = deformable
    if metric is None and method == "learned":
        metric = "ncc"
    if metric is None:
        metric = (
            "mi" if method in ("rigid", "affine") or (method == "deformable" and deformable == "bspline") else "mse"
        )
    options["metric"] = metric
    predictor = Predictor(model, method=method, **options)
    result = predictor.predict({
        "fixed": _read(fixed), "moving": _read(moving), "moving_label": _read(moving_label, kind="label"),
        "fixed_mask": _read(fixed_mask, kind="label"), "moving_mask": _read(moving_mask, kind="label"),
    })
    outputs = result.write(out, "")
    if figure:
        from deepmia.report.results import result_figures

        outputs += result_figures("", result, out)
    given = [(p, role) for p, role in ((fixed, "fixed"), (moving, "moving"), (moving_label, "moving_label"),
                                       (fixed_mask, "fixed_mask"), (moving_mask, "moving_mask")) if p is not None]
    write_record(Path(out) / "run.json", predictor, [InputItem(p, role).record() for p, role in given], ["moving"],
                 outputs=outputs, options={**options, "figure": figure}, started=started)
    if as_json:
        import json

        print_json(json.loads((Path(out) / "registration.json").read_text()))
        return
    console.print(
        _summary_line(result) + f"; wrote {', '.join(p.name for p in outputs)} to {out}",
        soft_wrap=True, markup=False, highlight=False,
    )


def evaluate_command(
    run_dir: Path = typer.Argument(..., help="Output folder of deepmia register."),
    fixed_label: Path = typer.Option(None, "--fixed-label", help="Label map of FIXED: Dice/HD95 vs warped_label."),
    labels: str = typer.Option(None, "--labels", help="Comma-separated label values to score (default: all)."),
    mask: Path = typer.Option(None, "--mask", help="Region of FIXED for Jacobian and consistency statistics."),
    fixed_landmarks: Path = typer.Option(None, "--fixed-landmarks", help="CSV of x,y,z RAS mm points in FIXED."),
    moving_landmarks: Path = typer.Option(None, "--moving-landmarks", help="Corresponding CSV points in MOVING."),
    backward: Path = typer.Option(None, "--backward", help="Output folder of the MOVING->FIXED registration."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Score a registration: label Dice/HD95, landmark TRE, Jacobian folding and spread, inverse consistency."""
    from deepmia.cli._common import console, print_json
    from deepmia.processing.spatial_transform import points_from_file
    from deepmia.tasks.register.evaluate import evaluate_run

    if (fixed_landmarks is None) != (moving_landmarks is None):
        raise InvalidArgumentError("TRE needs both --fixed-landmarks and --moving-landmarks")
    result = evaluate_run(
        run_dir,
        fixed_label=_read(fixed_label, kind="label"),
        labels=_labels(labels),
        mask=_read(mask, kind="label"),
        fixed_points=None if fixed_landmarks is None else points_from_file(fixed_landmarks),
        moving_points=None if moving_landmarks is None else points_from_file(moving_landmarks),
        backward_dir=backward,
    )
    if as_json:
        print_json(result)
        return
    if "labels" in result:
        console.print(
            f"mean Dice {result['labels']['mean_dice']:.4f}, mean HD95 {result['labels']['mean_hd95']:.3g} mm"
        )
    jac = result["jacobian"]
    console.print(f"Jacobian: folding {100 * jac['folding_fraction']:.3f}% of voxels, std {jac['std']:.4f}")
    if "tre" in result:
        console.print(f"TRE: mean {result['tre']['mean']:.3f} mm (before {result['tre']['mean_before']:.3f} mm)")
    if "inverse_consistency" in result:
        console.print(f"inverse consistency: mean {result['inverse_consistency']['mean']:.3f} mm")
    console.print(f"wrote {Path(run_dir) / 'metrics.json'}")


def train_command(
    dataset: Path = typer.Option(..., "--dataset", help="Dataset folder (deepmia dataset import) with label maps."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (an existing one resumes)."),
    time_budget: str = typer.Option(
        "10m", "--time-budget", help="Training wall-clock budget, e.g. 45m, 90s or 1.5h (a bare number is seconds)."
    ),
    epochs: int = typer.Option(1000, "--epochs", help="Maximum epochs."),
    dice_weight: float = typer.Option(1.0, "--dice-weight", help="Weight of the label-overlap term (0: unsupervised)."),
    smoothness_weight: float = typer.Option(1.0, "--smoothness-weight", help="Weight of the bending energy."),
    max_cases: int = typer.Option(1000, "--max-cases", help="Use at most this many training cases."),
    steps_per_epoch: int = typer.Option(50, "--steps-per-epoch", help="Optimiser steps between validations."),
    batch_size: int = typer.Option(4, "--batch-size", help="Pairs per optimiser step."),
    precision: str = typer.Option("auto", "--precision", help="auto (measure bf16 against fp32), bf16 or fp32."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Train the learned registration network (affine head + VoxelMorph) on the dataset's training cases."""
    from deepmia._validate import look_up_option
    from deepmia.cli._common import console, parse_duration, write_card
    from deepmia.tasks.register.train import train_registration

    precision = look_up_option(precision, ("auto", "bf16", "fp32"), what="precision")
    summary = train_registration(
        dataset,
        out,
        time_budget_s=parse_duration(time_budget),
        max_epochs=epochs,
        dice_weight=dice_weight,
        smoothness_weight=smoothness_weight,
        max_train_cases=max_cases,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        precision=None if precision == "auto" else precision,
        seed=seed,
    )
    write_card(out, "register", dataset)
    console.print(
        f"trained {summary['epochs']} epochs ({summary['steps']} steps) in {summary['seconds']:.0f} s; "
        f"validation Dice {summary['best_val_dice']:.4f}, folding {summary['best_val_folding']}; wrote {out}",
        soft_wrap=True,
    )


def add_commands(*, app: typer.Typer, train: typer.Typer, evaluate: typer.Typer) -> None:
    """Add ``register`` to ``app``, ``register`` to the ``train`` and ``evaluate`` groups."""
    app.command("register")(register_command)
    train.command("register")(train_command)
    evaluate.command("register")(evaluate_command)


def predict(model_dir: Path, src: Path, dst: Path, *, options: dict[str, Any]) -> None:
    """``deepmia predict`` for a registration model: ``src`` is ``FIXED,MOVING`` or a folder holding both.

    Writes the registration outputs and ``run.json`` into ``dst``.

    Args:
        model_dir: Trained registration model.
        src: Two comma-separated image paths (fixed first) or a folder with ``fixed.*`` and ``moving.*``.
        dst: Output folder.
        options: ``figure`` (bool), ``device``.
    """
    import time

    from deepmia.cli._common import console
    from deepmia.engine.batch import InputItem, write_record
    from deepmia.tasks.register.predict import Predictor

    started = time.time()
    text = str(src)
    if "," in text:
        fixed_path, moving_path = (Path(p) for p in text.split(",", 1))
    else:
        found = {p.name.split(".")[0]: p for p in Path(src).glob("*")}
        if "fixed" not in found or "moving" not in found:
            raise InvalidArgumentError(
                "registration input must be FIXED,MOVING or a folder with fixed.* and moving.*",
                path=src, fix="e.g. deepmia predict MODEL fixed.nii.gz,moving.nii.gz OUT",
            )
        fixed_path, moving_path = found["fixed"], found["moving"]
    predictor = Predictor(model_dir, device=options.get("device", "cpu"), runtime=options.get("runtime") or "torch",
                          precision=options.get("precision"))
    result = predictor.predict((_read(fixed_path), _read(moving_path)))
    outputs = result.write(dst, "")
    if options.get("figure"):
        from deepmia.report.results import result_figures

        outputs += result_figures("", result, dst)
    inputs = [InputItem(p, role).record() for p, role in ((fixed_path, "fixed"), (moving_path, "moving"))]
    record = write_record(Path(dst) / "run.json", predictor, inputs, ["moving"], outputs=outputs,
                          options={"figure": bool(options.get("figure"))}, started=started)
    console.print(_summary_line(result) + f"; wrote {len(outputs)} files and {record.name} to {dst}",
                  soft_wrap=True, markup=False, highlight=False)


def _summary_line(result: Any) -> str:
    """``method: MSE 0.15 -> 0.02 in 1.2 s``: the similarity with its real name and sign."""
    rows = {r["quantity"]: r["value"] for r in result.measurements()}
    name = next(q for q in rows if q.endswith(" before"))[: -len(" before")]
    return (f"{result.registration.method}: {name} {rows[name + ' before']:.4g} -> {rows[name + ' after']:.4g} "
            f"in {result.registration.seconds:.1f} s")
