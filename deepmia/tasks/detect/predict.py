"""The detection ``Predictor``: a model directory in, boxes in the input's own pixels out.

Per image: normalise, rescale by the plan's factor, run the detector (MONAI's sliding-window inferer when the
image is larger than the network input), for each mirror of the test-time augmentation mirror the boxes back,
fuse the passes (and the folds of an ensemble) by weighted box fusion, map the boxes back to image pixels and
clip them to the image. The detector's own per-class NMS (MONAI ``batched_nms``) runs inside each pass.

``predict_path`` writes COCO results: ``predictions.json`` (``image_id`` = the file's stem, ``category_id``,
``bbox`` = ``[x, y, width, height]`` in pixels, ``score``; 3D: ``[x, y, z, w, h, d]`` in voxels plus
``bbox_world``, the box in RAS millimetres) and ``categories.json``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.engine.runners import NetworkSpec, resolve_precision, runtime_info, use_runtime
from deepmia.engine.runtime import autocast, configure_threads, resolve_device
from deepmia.errors import InvalidArgumentError
from deepmia.image import Image
from deepmia.metrics.detection import box_iou
from deepmia.tasks._base import Predictor as TaskPredictor
from deepmia.tasks._base import case_id
from deepmia.tasks._model import load_fold_models, resolve_folds
from deepmia.tasks.detect.data import apply_normalization, mirror_boxes, resize
from deepmia.tasks.detect.model import build_detector
from deepmia.tasks.detect.plan import DetectPlan, load_plan
from deepmia.tasks.detect.result import DetectResult, categories_of, to_coco_results, world_boxes

__all__ = ["Predictor", "weighted_box_fusion", "mirror_passes", "detect_passes", "fuse", "detect_arrays",
           "to_coco_results", "world_boxes", "categories_of"]


def mirror_passes(axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Mirror combinations of the test-time augmentation.

    Every subset of ``axes`` in 2D; in 3D no mirror and each axis alone (4 passes instead of 8).
    """
    axes = list(axes)
    if spatial_dims == 2:
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    return [(), *[(a,) for a in axes]]


def weighted_box_fusion(
    results: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, iou_threshold: float = 0.55,
    skip_below: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted box fusion (Solovyev et al., 2021) of several predictions of one image, 2D or 3D.

    Boxes of one class, highest score first, join the first cluster whose fused box they overlap with IoU above
    ``iou_threshold`` (else start one). A cluster's box is the score-weighted mean of its boxes' corners; its
    score is their mean score times ``min(n, P) / P`` for ``n`` boxes from ``P`` predictions, so a box found by
    one pass of four keeps a quarter of its score.

    Args:
        results: ``(boxes (N, 2d), scores (N,), labels (N,))`` per prediction (pass or model).
        iou_threshold: Overlap at which a box joins a cluster.
        skip_below: Boxes scoring below this are dropped first.

    Returns:
        Fused ``(boxes, scores, labels)``, highest score first.
    """
    n_pred = len(results)
    if n_pred == 0:
        raise InvalidArgumentError("weighted box fusion needs at least one prediction")
    dims2 = next((np.asarray(r[0]).shape[1] for r in results if np.ndim(r[0]) == 2), 4)
    boxes = np.concatenate([np.asarray(r[0], np.float64).reshape(-1, dims2) for r in results])
    scores = np.concatenate([np.asarray(r[1], np.float64) for r in results])
    labels = np.concatenate([np.asarray(r[2], np.int64) for r in results])
    keep = scores >= skip_below
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    out_b, out_s, out_l = [], [], []
    for c in np.unique(labels):
        sel = np.flatnonzero(labels == c)
        sel = sel[np.argsort(-scores[sel], kind="stable")]
        fused: list[np.ndarray] = []
        members: list[list[int]] = []
        for i in sel:
            if fused:
                iou = box_iou(boxes[i][None], np.stack(fused))[0]
                j = int(iou.argmax())
                if iou[j] > iou_threshold:
                    members[j].append(i)
                    w = scores[members[j]]
                    fused[j] = (boxes[members[j]] * w[:, None]).sum(axis=0) / w.sum()
                    continue
            fused.append(boxes[i].copy())
            members.append([i])
        for box, idx in zip(fused, members, strict=True):
            out_b.append(box)
            out_s.append(scores[idx].mean() * min(len(idx), n_pred) / n_pred)
            out_l.append(c)
    if not out_b:
        return np.zeros((0, dims2)), np.zeros(0), np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(out_s), kind="stable")
    return np.stack(out_b)[order], np.asarray(out_s)[order], np.asarray(out_l, np.int64)[order]


def _configure(detector: torch.nn.Module, plan: DetectPlan) -> None:
    inf = plan.inference
    detector.set_box_selector_parameters(
        score_thresh=inf.score_threshold, topk_candidates_per_level=inf.topk_per_level,
        nms_thresh=inf.nms_threshold, detections_per_img=inf.max_detections,
    )
    detector.set_sliding_window_inferer(
        roi_size=plan.input_size, sw_batch_size=1, overlap=inf.window_overlap, mode="constant",
        padding_mode="constant", cval=0.0, progress=False,
    )


Found = tuple[np.ndarray, np.ndarray, np.ndarray]


def detect_passes(
    detectors: Sequence[torch.nn.Module], arrays: Sequence[np.ndarray], plan: DetectPlan, *, tta: bool,
    precision: str | None = None, batch_size: int = 8,
) -> list[list[Found]]:
    """Every prediction (mirror pass x detector) of network-space arrays ``(C, *spatial)``, in network pixels.

    Images of one size within ``input_size`` run in batches; a larger one runs through MONAI's sliding-window
    inferer. Boxes of a mirrored pass are mirrored back. The first prediction of each image is the unmirrored
    pass of the first detector.
    """
    passes = mirror_passes(plan.augmentation.mirror_axes, plan.spatial_dims) if tta else [()]
    precision = precision or plan.schedule.precision
    per_image: list[list[Found]] = [[] for _ in arrays]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape[1:]), []).append(i)
    for det in detectors:
        _configure(det, plan)
        det.eval()
        dev = next(det.parameters()).device
        for shape, idx in groups.items():
            windowed = any(s > m for s, m in zip(shape, plan.input_size, strict=True))
            step = 1 if windowed else batch_size
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                for mirror in passes:
                    x = torch.from_numpy(np.stack([arrays[i] for i in chunk])).to(dev)
                    if mirror:
                        x = torch.flip(x, dims=[2 + a for a in mirror])  # (B, C, *spatial)
                    with torch.no_grad(), autocast(precision, dev.type):
                        outs = det(x, use_inferer=windowed)
                    for i, out in zip(chunk, outs, strict=True):
                        boxes = out["box"].float().cpu().numpy().astype(np.float64)
                        for a in mirror:
                            boxes = mirror_boxes(boxes, a, shape[a])
                        per_image[i].append((boxes, out["label_scores"].float().cpu().numpy(),
                                             out["label"].cpu().numpy().astype(np.int64)))
    return per_image


def fuse(predictions: Sequence[Found], *, iou_threshold: float, max_detections: int) -> Found:
    """One prediction as it is; several by :func:`weighted_box_fusion`, cut to the ``max_detections`` best."""
    if len(predictions) == 1:
        return predictions[0]
    boxes, scores, labels = weighted_box_fusion(predictions, iou_threshold=iou_threshold)
    return boxes[:max_detections], scores[:max_detections], labels[:max_detections]


def detect_arrays(
    detectors: Sequence[torch.nn.Module], arrays: Sequence[np.ndarray], plan: DetectPlan, *, tta: bool,
    precision: str | None = None, batch_size: int = 8,
) -> list[Found]:
    """Detect objects in network-space arrays: :func:`detect_passes` fused with the plan's WBF threshold."""
    inf = plan.inference
    return [fuse(p, iou_threshold=inf.wbf_iou, max_detections=inf.max_detections)
            for p in detect_passes(detectors, arrays, plan, tta=tta, precision=precision, batch_size=batch_size)]


class Predictor(TaskPredictor):
    """Detect objects with a trained model directory (fold ensemble, mirror TTA, weighted box fusion).

    Args:
        model_dir: The model directory (``plan.json`` and ``fold_<k>/model_best.pt``).
        folds: Folds to ensemble (default: every trained fold).
        tta: False turns mirror test-time augmentation off; otherwise the plan's ``inference.tta`` (chosen on
            validation when the model was trained) applies.
        precision: Override the plan's precision.
        min_score: Detections below this score are left out of figures, counts and summaries (the COCO results keep
            every box for scoring).
        device: ``cpu`` (default), ``cuda`` or ``auto``.
        runtime: ``torch`` (default), ``onnx`` or ``openvino``: where the network (backbone and heads) runs; anchors,
            box decoding and NMS stay in torch.

    Raises:
        InvalidArgumentError: Not a detection model directory, or no weights for a requested fold.
    """

    task = "detect"
    batch_size = 8

    def __init__(
        self, model_dir: str | os.PathLike[str], *, folds: Sequence[int] | None = None, tta: bool | None = None,
        precision: str | None = None, min_score: float = 0.3, device: str | None = "cpu", runtime: str = "torch",
    ) -> None:
        self.model_dir = Path(model_dir)
        self.plan: DetectPlan = load_plan(self.model_dir / "plan.json")
        self.folds = resolve_folds(self.model_dir, folds, task=self.task)
        configure_threads(self.plan.schedule.threads)
        self.tta = self.plan.inference.tta and tta is not False
        self.device = resolve_device(device)
        self.runtime, self.precision = resolve_precision(runtime, precision, self.plan.schedule.precision,
                                                         self.device.type)
        if not 0 <= min_score <= 1:
            raise InvalidArgumentError(f"min_score must be in [0, 1], got {min_score}")
        self.min_score = float(min_score)
        self.detectors = load_fold_models(self.model_dir, self.folds, lambda: build_detector(self.plan),
                                          device=self.device)
        self.runners = use_runtime(self.onnx_networks, self.model_dir, self.runtime, self.precision)

    def options(self) -> dict[str, Any]:
        """Folds, TTA, precision and the figure/count score cut (recorded in run.json)."""
        return {"folds": self.folds, "tta": self.tta, "precision": self.precision, "min_score": self.min_score,
                **runtime_info(self.runtime, self.precision, self.runners)}

    def onnx_networks(self) -> list[NetworkSpec]:
        """Each fold's network: backbone, pyramid and heads (one output per level and head), dynamic axes."""
        size = [n + (-n) % self.plan.stride for n in self.plan.input_size]  # the detector pads to its stride
        example = torch.zeros((1, self.plan.in_channels, *size))
        axes = {0: "batch", **{2 + i: f"s{i}" for i in range(self.plan.spatial_dims)}}
        specs = []
        for k, det in zip(self.folds, self.detectors, strict=True):
            with torch.no_grad():
                levels = len(det.network.eval()(example)[det.cls_key])
            names = tuple(f"{h}_{i}" for h in ("cls", "box") for i in range(levels))
            specs.append(NetworkSpec(f"fold_{k}", det.network, (example,), ("image",), names, {"image": axes},
                                     self.model_dir / f"fold_{k}" / "model_best.pt", partial(setattr, det, "network"),
                                     groups={det.cls_key: levels, det.box_reg_key: levels}))
        return specs

    def check(self, image: Image, *, path: Any = None) -> None:
        """Refuse an image whose channels or dimensionality do not fit the model."""
        if image.num_channels != self.plan.in_channels or image.spatial_dims != self.plan.spatial_dims:
            raise InvalidArgumentError(
                f"image of shape {image.array.shape}; the model expects {self.plan.in_channels} channel(s), "
                f"{self.plan.spatial_dims}D", path=path)

    def input_warnings(self, image: Image) -> list[str]:
        """Where ``image`` falls outside the training data: size (around the median training size) and intensity."""
        from deepmia.tasks._checks import fingerprint_warnings

        median = self.plan.fingerprint.get("median_shape")
        shape = [(float(m), float(m)) for m in median] if median else None
        norm = self.plan.normalization
        intensity = list(zip(norm.mean, norm.std, strict=True)) if norm.mean and norm.std else None
        return fingerprint_warnings(image, shape=shape, intensity=intensity)

    def prepare(self, image: Image, *, path: Any = None) -> np.ndarray:
        """The image in network space.

        Raises:
            InvalidArgumentError: Its channels or dimensionality do not fit the model.
        """
        self.check(image, path=path)
        return resize(apply_normalization(image.array, self.plan), self.plan.scale)

    def predict_arrays(self, arrays: Sequence[np.ndarray], shapes: Sequence[Sequence[int]]) -> list[Found]:
        """Boxes in image pixels (clipped to each image's ``shapes``), scores and class indices per prepared array."""
        found = detect_arrays(self.detectors, arrays, self.plan, tta=self.tta,
                              precision=self.precision if self.runtime == "torch" else "fp32")
        out = []
        for (boxes, scores, labels), shape in zip(found, shapes, strict=True):
            d = len(shape)
            b = boxes / self.plan.scale
            hi = np.asarray(shape, np.float64)
            b = np.concatenate([np.clip(b[:, :d], 0, hi), np.clip(b[:, d:], 0, hi)], axis=1)
            out.append((b, scores, labels))
        return out

    def predict(self, image: Image) -> DetectResult:
        """Detect objects in one image: boxes in its pixels, scores and classes."""
        return self.predict_many([image])[0]

    def predict_many(self, images: Sequence[Image]) -> list[DetectResult]:
        """Detect objects in several images (same-size images run in batches)."""
        found = self.predict_arrays([self.prepare(im) for im in images], [im.spatial_shape for im in images])
        return [DetectResult(case=case_id(im), boxes=b, scores=s, labels=lab,
                             class_names=list(self.plan.class_names), affine=np.asarray(im.affine, float),
                             min_score=self.min_score, image=im, warnings=self.input_warnings(im))
                for im, (b, s, lab) in zip(images, found, strict=True)]

    def predict_image(self, image: Image) -> Found:
        """Boxes ``(N, 2d)`` in the image's pixels, scores and class indices."""
        r = self.predict(image)
        return r.boxes, r.scores, r.labels

    def predict_path(self, src: str | Path, dst: str | Path) -> dict[str, Any]:
        """Detect in an image file, a DICOM series or every input of a folder; write COCO results.

        A thin adapter over :func:`deepmia.engine.batch.run_batch`: ``dst/predictions.json``,
        ``dst/categories.json``, ``skipped.csv``, ``measurements.csv`` and ``run.json``.

        Returns:
            ``predicted`` (images), ``detections``, ``skipped`` (file, reason) pairs and ``out`` (the JSON path).

        Raises:
            InvalidArgumentError: The input is missing, or nothing could be predicted.
            ReadError: A single input file cannot be read.
        """
        from deepmia.engine.batch import run_batch

        dst = Path(dst)
        report = run_batch(self, src, dst, keep_results=True)
        n = sum(len(r.boxes) for _, r in report.results)
        return {"predicted": len(report.predicted), "detections": n, "skipped": report.skipped,
                "out": dst / "predictions.json"}
