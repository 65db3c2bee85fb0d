"""The classification :class:`Predictor`: one object that loads a model directory and classifies images.

Preprocessing (resize, clip, standardise), the ensemble of members, test-time mirroring, optional MC dropout,
temperature scaling, the operating threshold and the low-confidence flag all come from the model directory,
so the CLI, the REST service and batch jobs only adapt inputs and outputs.

Example:
    >>> p = Predictor("models/pneumoniamnist")              # doctest: +SKIP
    >>> p.predict(read_image("xray.png")).label               # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from deepmia.engine.runners import NetworkSpec, resolve_precision, runtime_info, use_runtime
from deepmia.engine.runtime import resolve_device
from deepmia.engine.uncertainty import sample_logits, summarise_samples
from deepmia.errors import DatasetError, InvalidArgumentError
from deepmia.image import Image
from deepmia.io import image_stem
from deepmia.tasks._base import Predictor as TaskPredictor
from deepmia.tasks._base import case_id
from deepmia.tasks.classify.data import MISSING, check_table_columns, encode_table, read_table, to_network_input
from deepmia.tasks.classify.model import build_model, run_model
from deepmia.tasks.classify.plan import ClassifyPlan, TabularSpec, load_plan
from deepmia.tasks.classify.result import ClassifyResult

__all__ = ["Predictor"]


class _OnDevice:
    """``run_model`` with inputs moved to ``device`` and logits returned on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, tab: torch.Tensor | None) -> torch.Tensor:
        out = run_model(model, x.to(self.device), None if tab is None else tab.to(self.device))
        return out.cpu()


class Predictor(TaskPredictor):
    """Classify images with a trained model directory.

    Args:
        model_dir: The model directory (``plan.json``, ``fold_<k>/model_best.pt``, ``calibration.json``).
        tta: Mirror test-time augmentation (default: the plan's ``tta``).
        mc_dropout: MC-dropout passes per member and mirror (default: the plan's ``mc_dropout_samples``).
        calibrated: Apply the stored temperature, threshold and flag (False while training calibrates).
        folds: Ensemble members to use (default: all).
        clinical: The clinical table (CSV) of a fusion model; rows are joined on ``image.meta["case_id"]``.
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        runtime: ``torch`` (default), ``onnx`` or ``openvino`` (the ONNX export: ``deepmia export onnx``).
        precision: Outside torch, ``fp32`` (default), ``fp16``, ``int8`` (ONNX Runtime) or ``bf16`` (OpenVINO).

    Raises:
        InvalidArgumentError: The directory is not a classification model directory, a member does not exist, or
            MC dropout outside torch (an exported network has no dropout).
    """

    task = "classify"
    batch_size = 64

    def __init__(
        self, model_dir: str | Path, *, tta: bool | None = None, mc_dropout: int | None = None,
        calibrated: bool = True, folds: Sequence[int] | None = None, clinical: str | Path | None = None,
        device: str | None = "cpu", runtime: str = "torch", precision: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.plan: ClassifyPlan = load_plan(self.model_dir / "plan.json")
        self.tta = self.plan.tta if tta is None else tta
        self.mc_samples = self.plan.mc_dropout_samples if mc_dropout is None else int(mc_dropout)
        self.device = resolve_device(device)
        split = self._json("split.json")
        self.members: list[dict[str, Any]] = split.get("members") or [{"fold": 0, "seed": self.plan.seed}]
        chosen = list(range(len(self.members))) if folds is None else list(folds)
        bad = [f for f in chosen if not 0 <= f < len(self.members)]
        if bad or not chosen:
            raise InvalidArgumentError(f"no member(s) {bad}; the model has {len(self.members)}", path=self.model_dir)
        self.models = []
        for k in chosen:
            path = self.model_dir / f"fold_{k}" / "model_best.pt"
            if not path.exists():
                raise InvalidArgumentError("member weights missing", path=path, fix="train the model again")
            model = build_model(self.plan)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.models.append(model.to(self.device).eval())
        self.members = [self.members[k] for k in chosen]
        self.folds = chosen
        self.runtime, self.precision = resolve_precision(runtime, precision, "fp32", self.device.type)
        if self.runtime != "torch" and self.mc_samples:
            raise InvalidArgumentError(f"MC dropout ({self.mc_samples} passes) needs the torch runtime: an exported "
                                       "network has no dropout", path=self.model_dir, fix="pass mc_dropout=0")
        self.runners = use_runtime(self.onnx_networks, self.model_dir, self.runtime, self.precision)
        cal = self._json("calibration.json") if calibrated else {}
        self.calibration = cal
        self.temperature = float(cal.get("temperature", 1.0))
        self.threshold = float(cal.get("threshold", 0.5))
        self.uncertainty_flag = float(cal.get("uncertainty_flag", float("inf")))
        self.clinical = None if clinical is None else Path(clinical)
        self.clinical_rows = None if clinical is None else self.read_clinical(self.clinical)

    def options(self) -> dict[str, Any]:
        """TTA, MC dropout, members, calibration and the clinical table (recorded in run.json)."""
        return {"tta": self.tta, "mc_dropout": self.mc_samples, "members": self.members,
                "temperature": self.temperature, "threshold": self.threshold,
                "clinical": None if self.clinical is None else str(self.clinical),
                **runtime_info(self.runtime, self.precision, self.runners)}

    def onnx_networks(self) -> list[NetworkSpec]:
        """Each member's network (with the clinical features of a fusion model), exported with a dynamic batch."""
        shape = (2, len(self.plan.channels), *self.plan.input_size)
        spec = self.plan.tabular
        example = (torch.zeros(shape),) if spec is None else (torch.zeros(shape), torch.zeros((2, spec.width)))
        names = ("image",) if spec is None else ("image", "clinical")
        return [NetworkSpec(f"fold_{k}", net, example, names, ("logits",), {n: {0: "batch"} for n in names},
                            self.model_dir / f"fold_{k}" / "model_best.pt", partial(self.models.__setitem__, i))
                for i, (k, net) in enumerate(zip(self.folds, self.models, strict=True))]

    def check(self, image: Image, *, path: Any = None) -> list[str]:
        """Refuse an image of the wrong dimensionality or channels, or (fusion) without a clinical row."""
        from deepmia.tasks.classify.data import check_image

        check_image(image, self.plan, path=path)
        if self.plan.tabular is not None:
            self._clinical_of([image], path=path)

    def check_run(self, names: Sequence[str]) -> None:
        """A fusion model needs its clinical table, every value readable and some row naming an input.

        Raises:
            InvalidArgumentError: A fusion model without a table.
            DatasetError: A value the encoder cannot read (e.g. a word in a numeric column), or no row whose case
                id is an input's name without its image suffix; the table is named.
        """
        if self.plan.tabular is None:
            return
        if self.clinical_rows is None:
            self.read_clinical(None)  # raises, naming the columns the model needs
        rows = cast(dict[str, dict[str, str]], self.clinical_rows)
        spec = cast(TabularSpec, self.plan.tabular)
        encode_table(rows, list(rows), spec, path=self.clinical)
        ids = [image_stem(n) for n in names]
        if ids and not any(c in rows for c in ids):
            raise DatasetError(
                f"no {spec.id_column!r} in the clinical table matches an input file (inputs such as {ids[0]!r}; "
                f"table ids such as {next(iter(rows))!r})", path=self.clinical,
                fix=f"the {spec.id_column!r} column must hold the input file names without suffix")

    def input_warnings(self, image: Image) -> list[str]:
        """Where ``image`` falls outside the training data: size, spacing and intensity."""
        from deepmia.tasks._checks import fingerprint_warnings, ranges_of

        fp, norm = self.plan.fingerprint, self.plan.normalization
        intensity = list(zip(norm.mean, norm.std, strict=True)) if norm.clip is None else None
        return fingerprint_warnings(image, shape=ranges_of(fp.get("shape")), spacing=ranges_of(fp.get("spacing")),
                                    intensity=intensity)

    def _clinical_of(self, images: Sequence[Image], *, path: Any = None) -> np.ndarray | None:
        if self.plan.tabular is None:
            return None
        if self.clinical_rows is None:
            self.read_clinical(None)  # raises: the model fuses clinical columns and no table was given
        spec = cast(TabularSpec, self.plan.tabular)
        ids = [case_id(im) for im in images]
        for cid in ids:
            if cid not in self.clinical_rows:
                raise DatasetError(f"no row with {spec.id_column} {cid!r} for {path or cid}", path=self.clinical,
                                   fix="add the row (empty cells are missing values)")
        return encode_table(self.clinical_rows, ids, spec, path=self.clinical)

    def clinical_features(self, image: Image) -> np.ndarray | None:
        """The encoded clinical row ``(1, T)`` of ``image``'s case (None for an image-only model)."""
        return self._clinical_of([image])

    def predict(self, image: Image) -> ClassifyResult:
        """Classify one image (a fusion model joins its clinical row on ``image.meta["case_id"]``)."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[Image]) -> list[ClassifyResult]:
        """Classify several images in batches."""
        x = np.stack([self.prepare(im, path=im.meta.get("source")) for im in images])
        r = self.predict_arrays(x, self._clinical_of(images))
        threshold = self.threshold_info()
        out = []
        for i, im in enumerate(images):
            unlike = self.input_warnings(im)  # an input unlike the training data is never a confident answer
            unseen = [] if self.clinical_rows is None else self.unseen_categories(self.clinical_rows, [case_id(im)])
            out.append(ClassifyResult(
                case=case_id(im), class_names=list(self.class_names),
                probabilities=r["probabilities"][i], decision=r["labels"][i], label=self.label_text(r["labels"][i]),
                uncertainty=float(r["uncertainty"][i]), low_confidence=bool(r["low_confidence"][i]) or bool(unlike),
                threshold=threshold, image=im, warnings=unlike + unseen))
        return out

    def threshold_info(self) -> dict[str, Any] | None:
        """The operating threshold and the class it is applied to (None for a multi-class argmax)."""
        if self.plan.multi_label:
            return {"threshold": self.threshold, "applies_to": "each label"}
        if self.plan.num_outputs == 2:
            pos = self.plan.positive_index if self.plan.positive_index is not None else 1
            return {"threshold": self.threshold, "class": self.class_names[pos]}
        return None

    def _json(self, name: str) -> dict[str, Any]:
        path = self.model_dir / name
        if not path.exists():
            raise InvalidArgumentError(f"{name} missing", path=self.model_dir, fix="is this a model directory?")
        return json.loads(path.read_text())

    @property
    def class_names(self) -> list[str]:
        """Class names in output order."""
        return self.plan.class_names

    # -------------------------------------------------------------------- arrays
    def predict_arrays(
        self, images: np.ndarray, tabular: np.ndarray | None = None, *, batch_size: int = 64,
        member_subsets: Sequence[Sequence[int]] | None = None, temperature: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict network inputs ``(N, C, *input_size)`` (already preprocessed).

        Args:
            images: Network inputs.
            tabular: Encoded clinical features ``(N, T)`` for a fusion model.
            batch_size: Cases per forward pass.
            member_subsets: Per case, the members to use (out-of-fold validation); default all.
            temperature: Override the stored temperature.

        Returns:
            ``logits (N, K)``, ``probabilities (N, K)``, ``uncertainty (N,)``, ``labels`` (class index, or a
            0/1 matrix for multi-label) and ``low_confidence (N,)`` bool.
        """
        spec, n = self.plan.tabular, len(images)
        expected = (len(self.plan.channels), *self.plan.input_size)
        if tuple(images.shape[1:]) != expected:
            raise InvalidArgumentError(f"network inputs of shape {tuple(images.shape[1:])}, the model takes {expected}",
                                       path=self.model_dir, fix="preprocess with Predictor.prepare")
        if (spec is None) != (tabular is None):
            raise InvalidArgumentError(
                "this model fuses clinical features: give them" if tabular is None
                else "this model uses images only; it takes no clinical features", path=self.model_dir)
        if spec is not None and tabular is not None and tabular.shape != (n, spec.width):
            raise InvalidArgumentError(f"clinical features of shape {tabular.shape}, expected {(n, spec.width)}",
                                       path=self.model_dir, fix="encode them with Predictor.encode_clinical")
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in range(n):
            groups[tuple(member_subsets[i]) if member_subsets is not None else tuple(range(len(self.models)))].append(i)
        k = self.plan.num_outputs
        logits, prob, unc = np.zeros((n, k)), np.zeros((n, k)), np.zeros(n)
        t = self.temperature if temperature is None else temperature
        mirrors = self.plan.augmentation.mirror_axes if self.tta else ()
        for members, rows in groups.items():
            models = [self.models[m] for m in members]
            for start in range(0, len(rows), batch_size):
                idx = np.array(rows[start:start + batch_size])
                x = torch.from_numpy(np.ascontiguousarray(images[idx], dtype=np.float32))
                tab = None if tabular is None else torch.from_numpy(tabular[idx].astype(np.float32))
                samples = sample_logits(models, _OnDevice(self.device), x, tab, mirror_axes=mirrors,
                                        mc_samples=self.mc_samples)
                logits[idx], prob[idx], unc[idx] = summarise_samples(samples, temperature=t,
                                                             multi_label=self.plan.multi_label)
        return {"logits": logits, "probabilities": prob, "uncertainty": unc, "labels": self.decide(prob),
                "low_confidence": unc > self.uncertainty_flag}

    def decide(self, prob: np.ndarray) -> np.ndarray:
        """Decisions from calibrated probabilities: the validation threshold (binary, multi-label) or argmax.

        A binary model calls its positive class (``plan.positive_index``, the same as ``calibration.json``'s
        ``positive_index``; class 1 for models trained before it was recorded) when that class's probability
        reaches the threshold, and the other class otherwise.
        """
        if self.plan.multi_label:
            return (prob >= self.threshold).astype(np.int64)
        pos = self.plan.positive_index
        if self.plan.num_outputs == 2 and pos is not None:
            return np.where(prob[:, pos] >= self.threshold, pos, 1 - pos).astype(np.int64)
        return prob.argmax(axis=1)

    # -------------------------------------------------------------------- images and files
    def prepare(self, image: Image, *, path: Any = None) -> np.ndarray:
        """An :class:`Image` as the network input ``(C, *input_size)``.

        Raises:
            InvalidArgumentError: Its dimensionality or channel count differs from the model's.
        """
        return to_network_input(image, self.plan, path=path)

    def read_clinical(self, table: str | Path | None) -> dict[str, dict[str, str]] | None:
        """The clinical table's rows for this model (None for an image-only model without a table).

        Raises:
            InvalidArgumentError: A fusion model without a table, or a table for an image-only model.
            DatasetError: An unreadable table, or one whose columns differ from those the model was trained with.
        """
        spec = self.plan.tabular
        if spec is None:
            if table is not None:
                raise InvalidArgumentError("this model uses images only; it takes no clinical table", path=table,
                                           fix="leave out --clinical")
            return None
        if table is None:
            raise InvalidArgumentError(
                f"this model fuses images with the clinical columns {spec.columns}: give the clinical table",
                path=self.model_dir, fix=f"pass --clinical CSV with a {spec.id_column!r} column (the file name "
                                         "without suffix) and those columns")
        rows = read_table(table, id_column=spec.id_column)
        if not rows:
            raise DatasetError("the clinical table has no rows", path=table)
        check_table_columns({k for r in rows.values() for k in r}, spec, path=table)
        return rows

    def encode_clinical(self, table: str | Path, case_ids: Sequence[str]) -> np.ndarray:
        """Encoded clinical features of ``case_ids`` from a CSV, with the encoder fitted at training.

        Raises:
            DatasetError: Unknown or missing columns, a non-number in a numeric column, or case ids without a row.
            InvalidArgumentError: A clinical table given to an image-only model.
        """
        rows = cast(dict[str, dict[str, str]], self.read_clinical(table))  # raised for an image-only model
        return encode_table(rows, case_ids, cast(TabularSpec, self.plan.tabular), path=table)

    def unseen_categories(self, rows: Mapping[str, Mapping[str, str]], case_ids: Sequence[str]) -> list[str]:
        """Notes on categorical values absent from training (encoded like a missing value), one per column."""
        notes = []
        for col, cats in (self.plan.tabular.categorical.items() if self.plan.tabular else ()):
            new = defaultdict(list)
            for cid in case_ids:
                v = rows[cid].get(col, "")
                if v.lower() not in MISSING and v not in cats:
                    new[v].append(cid)
            if new:
                notes.append(f"column {col!r}: value(s) {sorted(new)} unseen in training (cases "
                             f"{', '.join(sorted(c for ids in new.values() for c in ids)[:5])}"
                             f"{' ...' if sum(map(len, new.values())) > 5 else ''}) are encoded as missing; "
                             f"training categories {cats}")
        return notes

    def label_text(self, decision: np.ndarray) -> str:
        """A decision as class name(s) (multi-label: names joined by ``;``)."""
        if self.plan.multi_label:
            return ";".join(n for n, d in zip(self.class_names, decision, strict=True) if d)
        return self.class_names[int(decision)]

    def predict_path(
        self, src: str | Path, dst: str | Path, *, clinical: str | Path | None = None,
    ) -> dict[str, Any]:
        """Classify an image file, a DICOM series or every input in a folder; write ``dst/predictions.csv``.

        A thin adapter over :func:`deepmia.engine.batch.run_batch` (which also writes ``skipped.csv``,
        ``measurements.csv`` and ``run.json``). A fusion model joins ``clinical`` rows on the case id, the input's
        name without its image suffix.

        Returns:
            ``predicted`` (count), ``skipped`` (file, reason) pairs, ``low_confidence`` (count), ``notes``
            (warnings, e.g. categorical values unseen in training) and ``out`` (the CSV).

        Raises:
            ReadError: A single input file cannot be read.
            InvalidArgumentError: A single input does not fit the model, nothing could be predicted, a fusion model
                without ``clinical`` or an image-only model with it.
            DatasetError: A bad clinical table: unreadable, columns other than the model's, a non-number in a
                numeric column, no case id matching any input, or (single file) no row for the input.
        """
        from deepmia.engine.batch import run_batch

        src, dst = Path(src), Path(dst)
        saved = self.clinical, self.clinical_rows
        self.clinical, self.clinical_rows = (None if clinical is None else Path(clinical)), self.read_clinical(clinical)
        try:
            report = run_batch(self, src, dst, keep_results=True)
            rows = self.clinical_rows
            notes = [] if rows is None else self.unseen_categories(rows, [r.case for _, r in report.results])
        finally:
            self.clinical, self.clinical_rows = saved
        low = sum(r.low_confidence for _, r in report.results)
        return {"predicted": len(report.predicted), "skipped": report.skipped, "low_confidence": low,
                "notes": notes, "out": str(dst / "predictions.csv")}
