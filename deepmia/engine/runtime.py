"""Runtime settings shared by training and inference: threads, seeds, device, mixed precision."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch

from deepmia._validate import look_up_option

__all__ = [
    "Precision",
    "configure_threads",
    "seed_everything",
    "device",
    "resolve_device",
    "bf16_supported",
    "autocast",
    "choose_precision",
    "machine",
]

Precision = Literal["fp32", "bf16"]


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: the cores this process may use); returns the number set."""
    torch.set_num_threads(max(1, int(threads or machine()["cores"])))
    return torch.get_num_threads()


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, also ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(spec: str | torch.device | None = "cpu") -> torch.device:
    """The device a predictor runs on: ``cpu``, ``cuda`` (``cuda:1``, ...) or ``auto`` (the GPU when there is one).

    Raises:
        InvalidArgumentError: An unknown device, or ``cuda`` on a machine without a usable GPU.
    """
    from deepmia.errors import InvalidArgumentError

    if spec is None or str(spec) == "auto":
        return device()
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"unknown device {spec!r}", fix="use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError("device cuda asked for, but torch sees no GPU on this machine",
                                   fix="use cpu or auto")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"device {spec!r} is not supported", fix="use cpu, cuda, cuda:N or auto")
    return dev


def bf16_supported(device_type: str | None = None) -> bool:
    """Whether bfloat16 autocast is available on ``device_type`` (default: this machine's default device)."""
    if (device_type or device().type) == "cuda":
        return torch.cuda.is_bf16_supported()
    if not (getattr(torch.backends, "mkldnn", None) and torch.backends.mkldnn.is_available()):
        return False
    # oneDNN runs bf16 natively only with AVX-512 (BF16 / AMX); on an AVX2-only CPU (many AMD EPYC and desktop
    # chips) it falls back to reference kernels: a hippocampus case then took 569 s instead of about 1 s in fp32.
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@contextlib.contextmanager
def autocast(precision: Precision | str, device_type: str | None = None) -> Iterator[None]:
    """Mixed precision for the enclosed forward pass: ``bf16`` autocast, or nothing for ``fp32``.

    Args:
        precision: ``fp32`` or ``bf16``.
        device_type: ``cpu`` or ``cuda`` (default: this machine's default device).
    """
    precision = look_up_option(precision, ("fp32", "bf16"), what="precision")
    device_type = device_type or device().type
    if precision == "bf16" and bf16_supported(device_type):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
    else:
        yield


def _time_call(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def choose_precision(run: Callable[[Precision], Any], *, repeats: int = 3, min_speedup: float = 1.15) -> dict[str, Any]:
    """Measure ``run("fp32")`` against ``run("bf16")``; pick bf16 only if it is at least ``min_speedup`` faster.

    Args:
        run: Executes one representative step (a training step or a forward pass) at the given precision.
        repeats: Timed calls per precision (best of, after one warm-up call).
        min_speedup: The speed-up bf16 must show to be chosen.

    Returns:
        ``{"precision", "fp32_s", "bf16_s", "speedup"}``.
    """
    if not bf16_supported():
        return {"precision": "fp32", "fp32_s": None, "bf16_s": None, "speedup": None}
    fp32 = _time_call(lambda: run("fp32"), repeats)
    bf16 = _time_call(lambda: run("bf16"), repeats)
    speedup = fp32 / bf16 if bf16 > 0 else 0.0
    return {
        "precision": "bf16" if speedup >= min_speedup else "fp32",
        "fp32_s": fp32,
        "bf16_s": bf16,
        "speedup": speedup,
    }


def machine() -> dict[str, Any]:
    """The machine a plan is fitted to: cores, memory in GiB, GPU name (or None)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": cores, "memory_gib": round(memory, 1) if memory else None, "gpu": gpu, "torch": torch.__version__}
