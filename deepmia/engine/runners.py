"""Network runners: the one call a predictor makes to its network, in torch, ONNX Runtime or OpenVINO.

A task's predictor keeps its preprocessing, sliding window, test-time augmentation and post-processing; only the
network call changes. Each predictor describes its networks as :class:`NetworkSpec` objects (what to export,
with which inputs, and where the network sits in the predictor); :func:`use_runtime` puts a runner in each
place. A runner is a small ``torch.nn.Module`` that takes and returns CPU tensors like the network it replaces,
so task code that moves inputs to the network's device or switches it to eval mode works unchanged.

Files in a model directory (written by :func:`deepmia.engine.onnx_export.export_model`): ``fold_<k>/model.onnx``
(float32), ``fold_<k>/model_fp16.onnx``, ``fold_<k>/model_int8.onnx`` with ``fold_<k>/model_int8_calibration.json``,
and ``onnx.json``, the export record (source weight hashes, inputs, outputs, the check against torch).

Example:
    >>> from deepmia.engine.runners import RUNTIMES
    >>> RUNTIMES
    ('torch', 'onnx', 'openvino')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepmia._validate import look_up_option
from deepmia.engine.runtime import bf16_supported
from deepmia.errors import ExportError, InvalidArgumentError, MissingDependencyError

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "NetworkSpec",
    "OnnxNetwork",
    "OpenVinoNetwork",
    "Recorder",
    "onnx_file",
    "export_record",
    "resolve_precision",
    "use_runtime",
    "runtime_info",
    "sha256",
]

RUNTIMES = ("torch", "onnx", "openvino")
#: Precisions each runtime takes (torch's are its autocast modes; int8 reads the statically quantised model).
PRECISIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "fp16", "int8"), "openvino": ("fp32", "bf16", "fp16", "int8")}
#: The file of each precision in a fold folder.
FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx", "bf16": "model.onnx"}
#: OpenVINO's INFERENCE_PRECISION_HINT per precision (set explicitly: the CPU plugin runs bf16 by default on CPUs
#: with AMX/AVX512-BF16, which shifts logits; an INT8 model keeps f32 for the layers it does not quantise).
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
RECORD = "onnx.json"


@dataclass
class NetworkSpec:
    """One network of a predictor, as export and the runtimes see it.

    Attributes:
        name: Its folder in the model directory (``fold_0``); the ONNX files go there.
        module: The torch module to export: ``module(*inputs)`` is the call the predictor makes.
        example: Example inputs (CPU tensors) for tracing and for the check against ONNX Runtime.
        input_names: One name per input.
        output_names: One name per output tensor (flattened).
        dynamic: Per input name, its dynamic axes ``{axis: name}``; the outputs follow.
        groups: For outputs the predictor reads as ``{key: [tensors]}`` (a detector's pyramid levels): the keys
            with their number of outputs, in output order; None for one tensor.
        weights: The weight file the module was loaded from (its hash is recorded and checked).
        install: Puts a network (a runner, or a :class:`Recorder`) in the predictor where ``module`` is.
        check: Inputs for the check against torch, like the network's real inputs (default: standard normal).
    """

    name: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic: dict[str, dict[int, str]]
    weights: Path
    install: Callable[[Any], None]
    groups: dict[str, int] | None = None
    check: tuple[torch.Tensor, ...] | None = None


def sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def resolve_precision(runtime: str, precision: str | None, default: str = "fp32",
                      device_type: str | None = None) -> tuple[str, str]:
    """``(runtime, precision)`` checked: the precision defaults to fp32 outside torch (``default`` in torch).

    A bf16 default falls back to fp32 on a device without native bfloat16 (an AVX2-only CPU); asked for there, it
    is an error.

    Raises:
        InvalidArgumentError: An unknown runtime, or a precision the runtime does not run.
    """
    runtime = look_up_option(runtime, RUNTIMES, what="runtime")
    asked = precision not in (None, "auto")
    if not asked:
        precision = default if runtime == "torch" else "fp32"
    precision = look_up_option(precision, PRECISIONS[runtime], what=f"precision of runtime {runtime}")
    if runtime == "torch" and precision == "bf16" and not bf16_supported(device_type):
        if not asked:
            return runtime, "fp32"
        raise InvalidArgumentError(
            f"bf16 asked for, but this {device_type or 'default'} device has no native bfloat16 (CPU: "
            f"{torch.backends.cpu.get_cpu_capability()}); emulated bf16 is about 100x slower than fp32",
            fix="leave --precision out (fp32 is used here) or use a CPU with AVX-512 BF16/AMX or a GPU")
    return runtime, precision


def onnx_file(model_dir: str | os.PathLike[str], name: str, precision: str = "fp32") -> Path:
    """The ONNX file of network ``name`` at ``precision`` in a model directory (it may not exist)."""
    return Path(model_dir) / name / FILES[precision]


def export_record(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The model directory's ``onnx.json`` (empty if there is none)."""
    path = Path(model_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{RECORD} is not valid JSON: {exc}", path=path,
                                   fix=f"export again: deepmia export onnx {model_dir}") from exc


def _check_export(model_dir: Path, spec: NetworkSpec, precision: str) -> Path:
    """The ONNX file to run, after checking it exists and was exported from the weights the folder holds now."""
    path = onnx_file(model_dir, spec.name, precision)
    quantize = {"int8": " --quantize int8 --calibration DATASET", "fp16": " --quantize fp16"}.get(precision, "")
    fix = f"export it first: deepmia export onnx {model_dir}{quantize}"
    if not path.is_file():
        raise InvalidArgumentError(f"no ONNX export ({path.name}) for {spec.name}", path=path.parent, fix=fix)
    entry = export_record(model_dir).get("networks", {}).get(spec.name, {})
    if spec.weights.is_file() and entry.get("weights_sha256") not in (None, sha256(spec.weights)):
        raise InvalidArgumentError(f"{path.name} was exported from other weights than {spec.weights.name}",
                                   path=path, fix=fix)
    return path


def _input_shapes(path: Path) -> dict[str, list[int | None]]:
    """Each graph input's shape in an ONNX file: sizes, or None along a dynamic axis."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
            for i in graph.input}


def _threads() -> int:
    return max(1, torch.get_num_threads())


class _Runner(torch.nn.Module):
    """A network call outside torch: tensors in, tensors (or ``{key: [tensors]}``) out, like the module it replaces.

    It holds one empty parameter so that code asking which device a network is on (``next(net.parameters())``)
    gets the CPU.
    """

    runtime = "?"

    def __init__(self, path: Path, spec: NetworkSpec, precision: str) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.empty(0), requires_grad=False)
        self.path, self.precision = path, precision
        self.input_names, self.output_names, self.groups = spec.input_names, spec.output_names, spec.groups
        self.file_sha256 = sha256(path)
        self.shapes = _input_shapes(path)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The network's outputs for ``inputs`` (CPU float32 tensors).

        Raises:
            InvalidArgumentError: An input's shape differs from the file's along an axis it does not leave free.
        """
        feeds = {n: np.ascontiguousarray(x.detach().float().cpu().numpy())
                 for n, x in zip(self.input_names, inputs, strict=True)}
        for name, x in feeds.items():
            fixed = self.shapes.get(name)
            if fixed and (len(fixed) != x.ndim
                          or any(f is not None and f != n for f, n in zip(fixed, x.shape, strict=True))):
                raise InvalidArgumentError(
                    f"{self.path.name} takes {name} of shape {['?' if f is None else f for f in fixed]} (exported with "
                    f"those axes fixed); this input gives {list(x.shape)}", path=self.path,
                    fix="predict this input with --runtime torch")
        outs = [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in self.run(feeds)]
        if self.groups is None:
            return outs[0] if len(outs) == 1 else tuple(outs)
        grouped, start = {}, 0
        for key, n in self.groups.items():
            grouped[key] = outs[start:start + n]
            start += n
        return grouped

    def info(self) -> dict[str, Any]:
        """What run.json records of this runner."""
        return {"runtime": self.runtime, "precision": self.precision, "file": self.path.name,
                "sha256": self.file_sha256}

    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle: rebuilt in the worker
        state = self.__dict__.copy()
        state.pop("session", None)
        state.pop("compiled", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.load()

    def load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class OnnxNetwork(_Runner):
    """A network run by ONNX Runtime on the CPU (threads: torch's intra-op count)."""

    runtime = "onnx"

    def __init__(self, path: Path, spec: NetworkSpec, precision: str) -> None:
        super().__init__(path, spec, precision)
        self.threads = _threads()
        self.load()

    def load(self) -> None:
        """Open the inference session."""
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of deepmia
            raise MissingDependencyError("onnxruntime is not installed", fix="pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference."""
        return self.session.run(None, feeds)

    def info(self) -> dict[str, Any]:
        """Runtime, precision, file, threads and the ONNX Runtime version."""
        import onnxruntime as ort

        return {**super().info(), "threads": self.threads, "onnxruntime": ort.__version__}


class OpenVinoNetwork(_Runner):
    """A network run by OpenVINO on the CPU, reading the ONNX file, with its inference precision set explicitly."""

    runtime = "openvino"

    def __init__(self, path: Path, spec: NetworkSpec, precision: str) -> None:
        super().__init__(path, spec, precision)
        self.threads = _threads()
        self.hint = OPENVINO_HINTS[precision]
        self.load()

    def load(self) -> None:
        """Read and compile the model for the CPU."""
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - a dependency of deepmia
            raise MissingDependencyError("openvino is not installed", fix="pip install openvino") from exc
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": self.hint, "INFERENCE_NUM_THREADS": self.threads,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except RuntimeError as exc:  # OpenVINO reports a network it cannot convert as a RuntimeError
            failed = re.findall(r"^-- (\S+) with a message", str(exc), flags=re.M)
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"OpenVINO cannot run this network ({', '.join(failed) or detail}): "
                f"{_openvino_reason(str(exc)) or detail}", path=self.path,
                fix="use --runtime onnx (ONNX Runtime runs it) or --runtime torch") from exc

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One inference (outputs copied out of OpenVINO's buffers)."""
        result = self.compiled(feeds)
        return [np.array(result[o]) for o in self.compiled.outputs]

    def info(self) -> dict[str, Any]:
        """Runtime, precision, the inference precision OpenVINO reports, threads and its version."""
        import openvino as ov

        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        return {**super().info(), "inference_precision_hint": actual, "threads": self.threads,
                "openvino": ov.get_version()}


class Recorder(torch.nn.Module):
    """Runs a torch module and keeps the inputs of its first ``limit`` calls (calibration of INT8 models)."""

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str], limit: int = 64) -> None:
        super().__init__()
        self.module = module
        self.input_names = tuple(input_names)
        self.limit = limit
        self.feeds: list[dict[str, np.ndarray]] = []

    def forward(self, *inputs: torch.Tensor) -> Any:
        """``module(*inputs)``, remembering the inputs as float32 arrays."""
        if len(self.feeds) < self.limit:
            self.feeds.append({n: x.detach().float().cpu().numpy().copy()
                               for n, x in zip(self.input_names, inputs, strict=True)})
        return self.module(*inputs)


def _openvino_reason(message: str) -> str:
    """The line of an OpenVINO conversion report that says why an operator failed (e.g. GridSample's rank)."""
    lines = [x.strip() for x in message.splitlines()]
    return next((x for x in lines if " is only supported " in x or x.startswith("Unsupported")), "")


def use_runtime(specs: Callable[[], Sequence[NetworkSpec]], model_dir: str | os.PathLike[str], runtime: str,
                precision: str) -> list[Any]:
    """Install a runner for each network ``specs()`` names; returns the runners (torch: nothing to do, ``[]``).

    Raises:
        InvalidArgumentError: The model directory has no ONNX export for a network (the error names the
            export command), or an export older than the weights.
    """
    if runtime == "torch":
        return []
    cls = {"onnx": OnnxNetwork, "openvino": OpenVinoNetwork}[runtime]
    runners = []
    for spec in specs():
        runner = cls(_check_export(Path(model_dir), spec, precision), spec, precision)
        spec.install(runner)
        runners.append(runner)
    return runners


def runtime_info(runtime: str, precision: str, runners: Sequence[Any]) -> dict[str, Any]:
    """What run.json records of how the network ran: runtime, precision and, outside torch, each runner's file."""
    info: dict[str, Any] = {"runtime": runtime, "precision": precision}
    if runners:
        info["networks"] = [r.info() for r in runners]
        if runtime == "openvino":
            info["inference_precision_hint"] = runners[0].info()["inference_precision_hint"]
    return info
