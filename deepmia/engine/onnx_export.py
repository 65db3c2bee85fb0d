"""Export a predictor's networks to ONNX, check them against torch, and quantise them (float16, static INT8).

Only the networks are exported: preprocessing, sliding window, test-time augmentation and post-processing stay
in the predictor, which runs the exported file through :mod:`deepmia.engine.runners`. The files go into the
model directory next to the weights they come from (``fold_<k>/model.onnx``, ``model_fp16.onnx``,
``model_int8.onnx`` and ``model_int8_calibration.json``); ``onnx.json`` records the export.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia.engine.runners import RECORD, NetworkSpec, Recorder, export_record, onnx_file, sha256
from deepmia.errors import ExportError, InvalidArgumentError

__all__ = ["export_network", "max_abs_diff", "quantize_fp16", "quantize_int8", "export_model", "record_inputs",
           "OPSET"]

OPSET = 20  # GridSample on volumes (learned registration) needs opset 20
_OPERATOR = re.compile(r"(aten(?:::|\.)[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|torchvision::[A-Za-z0-9_]+|"
                       r"prims(?:::|\.)[A-Za-z0-9_]+)")


def _operator_of(exc: BaseException) -> str | None:
    """The first aten/prims operator an exporter error names (the error or one of its causes)."""
    seen = 0
    while exc is not None and seen < 10:
        found = _OPERATOR.findall(str(exc))
        if found:
            return found[0]
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress lines and warnings (its errors still raise)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


class _AdaptiveAvgPool(torch.nn.Module):
    """Adaptive average pooling written with slices and means, so that it exports with dynamic input sizes.

    Cell ``i`` of ``k`` along an axis of ``n`` averages ``floor(i n / k)`` to ``ceil((i + 1) n / k)``, as torch
    does; a box mean is the mean of means along each axis in turn.
    """

    def __init__(self, output_size: Any, dims: int) -> None:
        super().__init__()
        size = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * dims
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, k in enumerate(self.size):
            if k is None:
                continue
            dim, n = 2 + axis, x.shape[2 + axis]
            cells = [x.narrow(dim, (i * n) // k, ((i + 1) * n + k - 1) // k - (i * n) // k).mean(dim, keepdim=True)
                     for i in range(k)]
            x = cells[0] if k == 1 else torch.cat(cells, dim)
        return x


def _exportable(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with adaptive average pooling replaced by :class:`_AdaptiveAvgPool` (same values)."""
    module = copy.deepcopy(module).eval()  # tracing may also leave placeholders in a module's cached attributes
    pools = {torch.nn.AdaptiveAvgPool1d: 1, torch.nn.AdaptiveAvgPool2d: 2, torch.nn.AdaptiveAvgPool3d: 3}
    for name, child in list(module.named_modules()):
        dims = pools.get(type(child))
        if dims and name:
            parent, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, leaf, _AdaptiveAvgPool(child.output_size, dims))
    return module


def export_network(spec: NetworkSpec, path: str | Path, *, opset: int = OPSET) -> None:
    """Write ``spec.module`` as an ONNX file at ``path`` with dynamic axes ``spec.dynamic``.

    Raises:
        ExportError: The network uses an operator ONNX cannot express (the error names it), or the exporter
            failed otherwise.
    """
    from torch.export import Dim

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _exportable(spec.module)
    shapes = tuple({axis: Dim.DYNAMIC for axis in spec.dynamic.get(name, {})} or None for name in spec.input_names)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(module, spec.example, str(path), dynamo=True, opset_version=opset,
                              input_names=list(spec.input_names), output_names=list(spec.output_names),
                              dynamic_shapes=shapes, verbose=False, external_data=False)
    except Exception as exc:
        op = _operator_of(exc)
        problem = (f"the network of {spec.name} uses the operator {op}, which ONNX (opset {opset}) cannot express"
                   if op else f"the network of {spec.name} could not be exported to ONNX: {str(exc)[:300]}")
        raise ExportError(problem, path=spec.weights,
                          fix="keep this model on --runtime torch, or replace that operation in the network") from exc


def max_abs_diff(spec: NetworkSpec, path: str | Path, inputs: Sequence[torch.Tensor] | None = None) -> float:
    """Largest absolute difference between torch and ONNX Runtime outputs on ``inputs`` (default: random)."""
    import onnxruntime as ort

    xs = tuple(inputs) if inputs is not None else _check_inputs(spec)
    with torch.no_grad():
        ref = spec.module.eval()(*xs)
    flat = _flatten(ref)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = session.run(None, {n: x.numpy() for n, x in zip(spec.input_names, xs, strict=True)})
    return float(max(np.abs(o.astype(np.float64) - r.numpy().astype(np.float64)).max()
                     for o, r in zip(outs, flat, strict=True)))


def _check_fp32(spec: NetworkSpec, path: Path) -> float:
    """:func:`max_abs_diff` of the float32 file; an export that does not compute what torch computes is refused."""
    diff = max_abs_diff(spec, path)
    with torch.no_grad():
        scale = max(float(t.abs().max()) for t in _flatten(spec.module.eval()(*_check_inputs(spec))))
    if not np.isfinite(diff) or diff > 1e-3 * max(1.0, scale):
        path.unlink(missing_ok=True)
        raise ExportError(f"the ONNX export of {spec.name} differs from torch by up to {diff:.3g} (outputs up to "
                          f"{scale:.3g}): the exporter translated the network wrongly", path=spec.weights,
                          fix="keep this model on --runtime torch")
    return diff


def _check_inputs(spec: NetworkSpec) -> tuple[torch.Tensor, ...]:
    """The spec's check inputs, or standard normal inputs of the example's shapes (seeded)."""
    if spec.check is not None:
        return spec.check
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(x.shape, generator=gen) for x in spec.example)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.float()]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    return [t for v in out for t in _flatten(v)]


def quantize_fp16(src: str | Path, dst: str | Path) -> None:
    """A float16 copy of an ONNX model (inputs and outputs stay float32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, disable_shape_infer=False)
    onnx.save(model, str(dst))


class _Feeds:
    """``onnxruntime.quantization.CalibrationDataReader`` over recorded network inputs."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def quantize_int8(src: str | Path, dst: str | Path, feeds: Sequence[dict[str, np.ndarray]]) -> None:
    """Static INT8 quantisation (QDQ, per-channel weights, MinMax calibration) of an ONNX model on ``feeds``.

    Raises:
        InvalidArgumentError: No calibration inputs.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise InvalidArgumentError("no calibration inputs for INT8 quantisation", path=src,
                                   fix="pass --calibration DATASET holding the model's training cases")
    pre = Path(dst).with_suffix(".pre.onnx")
    try:
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)


def export_model(
    specs: Sequence[NetworkSpec], model_dir: str | Path, *, quantize: str | None = None,
    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None, calibration_cases: Sequence[str] = (),
    calibration_source: str | None = None,
) -> dict[str, Any]:
    """Export every network of a predictor into its model directory; check each file against torch.

    Args:
        specs: The predictor's networks (``predictor.onnx_networks()``).
        model_dir: The model directory (files go to ``<spec.name>/``).
        quantize: Also write ``fp16`` or ``int8`` (static; needs ``calibration``).
        calibration: Per network name, recorded network inputs of training cases.
        calibration_cases: The case ids those inputs came from (recorded next to the INT8 file).
        calibration_source: Where the cases were read from (recorded).

    Returns:
        The export record (also written to ``model_dir/onnx.json``): per network the files, their sizes and the
        largest absolute difference from torch on a random input.
    """
    import onnx
    import onnxruntime

    model_dir = Path(model_dir)
    record = export_record(model_dir) or {}
    record.update({"opset": OPSET, "torch": torch.__version__, "onnx": onnx.__version__,
                   "onnxruntime": onnxruntime.__version__, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())})
    networks = record.setdefault("networks", {})
    for spec in specs:
        fp32 = onnx_file(model_dir, spec.name)
        entry = _fp32_entry(spec, fp32, networks.get(spec.name, {}), reuse=bool(quantize))
        old = networks.get(spec.name, {})
        kept = {k: v for k, v in old.get("files", {}).items()
                if k != "fp32" and onnx_file(model_dir, spec.name, k).is_file()}
        if kept and old.get("weights_sha256") != entry["weights_sha256"]:
            for k in kept:  # a quantised file of older weights would be refused later: remove it now
                onnx_file(model_dir, spec.name, k).unlink()
        else:
            entry["files"].update(kept)
        if quantize == "fp16":
            dst = onnx_file(model_dir, spec.name, "fp16")
            quantize_fp16(fp32, dst)
            entry["files"]["fp16"] = {"file": dst.name, "bytes": dst.stat().st_size,
                                      "max_abs_diff": max_abs_diff(spec, dst)}
        elif quantize == "int8":
            entry["files"]["int8"] = _int8(spec, model_dir, (calibration or {}).get(spec.name, []),
                                           calibration_cases, calibration_source)
        networks[spec.name] = entry
    (model_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _fp32_entry(spec: NetworkSpec, fp32: Path, previous: dict[str, Any], *, reuse: bool) -> dict[str, Any]:
    """Export (or, when only quantising, reuse an export of the same weights) and describe the float32 file."""
    weights = sha256(spec.weights) if spec.weights.is_file() else ""
    done = previous.get("files", {}).get("fp32")
    if reuse and done and fp32.is_file() and previous.get("weights_sha256") == weights:
        return {**previous, "files": {"fp32": done}}
    export_network(spec, fp32)
    return {"weights": spec.weights.name, "weights_sha256": weights,
            "inputs": {n: [int(s) for s in x.shape] for n, x in zip(spec.input_names, spec.example, strict=True)},
            "outputs": list(spec.output_names),
            "dynamic_axes": {k: {str(a): v for a, v in d.items()} for k, d in spec.dynamic.items()},
            "files": {"fp32": {"file": fp32.name, "bytes": fp32.stat().st_size,
                               "max_abs_diff": _check_fp32(spec, fp32)}}}


def _int8(spec: NetworkSpec, model_dir: Path, feeds: list[dict[str, np.ndarray]], cases: Sequence[str],
          source: str | None) -> dict[str, Any]:
    dst = onnx_file(model_dir, spec.name, "int8")
    quantize_int8(onnx_file(model_dir, spec.name), dst, feeds)
    note = dst.with_name("model_int8_calibration.json")
    note.write_text(json.dumps({"method": "onnxruntime quantize_static, QDQ, MinMax, per-channel int8 weights, "
                                          "uint8 activations",
                                "source": source, "cases": list(cases), "network_inputs": len(feeds),
                                "input_shapes": sorted({str([list(v.shape) for v in f.values()]) for f in feeds})},
                               indent=2) + "\n")
    return {"file": dst.name, "bytes": dst.stat().st_size, "calibration": note.name,
            "max_abs_diff": max_abs_diff(spec, dst, [torch.from_numpy(feeds[0][n]) for n in spec.input_names])}


def record_inputs(specs: Sequence[NetworkSpec], predict: Callable[[Any], Any], inputs: Iterable[Any], *,
                  limit: int = 64) -> dict[str, list[dict[str, np.ndarray]]]:
    """The network inputs a predictor's own preprocessing makes of ``inputs`` (INT8 calibration data).

    Each network is replaced by a :class:`~deepmia.engine.runners.Recorder` while ``predict(x)`` runs on every
    input, then put back.

    Returns:
        Per network name, up to ``limit`` recorded input feeds ``{input name: array}``.
    """
    recorders = {}
    for spec in specs:
        recorders[spec.name] = Recorder(spec.module, spec.input_names, limit=limit)
        spec.install(recorders[spec.name])
    try:
        for x in inputs:
            predict(x)
    finally:
        for spec in specs:
            spec.install(spec.module)
    return {name: r.feeds for name, r in recorders.items()}
