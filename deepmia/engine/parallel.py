"""Multi-process training on one machine: N processes with torch DistributedDataParallel.

Gloo on the CPU, NCCL when every process has a GPU. :func:`launch` starts the processes (spawn), sets up the
process group on a free local port and returns what rank 0 returned; inside them, :func:`world_size`,
:func:`rank` and :func:`is_main` tell a process where it stands, and the small collectives below keep the
ranks in step (the :class:`~deepmia.engine.trainer.Trainer` uses them: one loop for 1 or N processes).

Each process gets an equal share of the cores (torch intra-op threads), so N processes on a 2-core machine
use the same cores as one; the data-parallel gain is in overlapping data loading and the smaller per-process
batches' better cache use, not in more cores.

Example:
    >>> from deepmia.engine.parallel import world_size, is_main
    >>> world_size(), is_main()   # outside launch(): one process, the main one
    (1, True)
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepmia.errors import InvalidArgumentError

__all__ = ["launch", "world_size", "rank", "is_main", "barrier", "all_max", "broadcast_object", "wrap"]


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def world_size() -> int:
    """Number of processes training together (1 outside :func:`launch`)."""
    dist = _dist()
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank, 0 to ``world_size() - 1`` (0 outside :func:`launch`)."""
    dist = _dist()
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes checkpoints, logs and results (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process arrives (no-op in one process)."""
    if world_size() > 1:
        _dist().barrier()


def all_max(value: float) -> float:
    """The largest ``value`` over the processes (so every rank takes the same decision from it)."""
    if world_size() == 1:
        return float(value)
    import torch

    t = torch.tensor([float(value)], dtype=torch.float64)
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return float(t.item())


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if world_size() == 1:
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: Any) -> Any:
    """``model`` in DistributedDataParallel when there are several processes, else unchanged."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(index: int, fn: Callable[..., Any], world: int, port: int, backend: str, threads: int,
            args: tuple[Any, ...], kwargs: dict[str, Any], result_path: str) -> None:
    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), WORLD_SIZE=str(world),
                      OMP_NUM_THREADS=str(threads))
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(index)
    dist = _dist()
    dist.init_process_group(backend, rank=index, world_size=world)
    try:
        out = fn(*args, **kwargs)
        if index == 0:
            Path(result_path).write_bytes(pickle.dumps(out))
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], processes: int, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in ``processes`` spawned processes joined in one process group.

    ``fn`` must be importable (a module-level function) and its arguments picklable. A failure in any process
    stops them all and is raised here.

    Args:
        fn: The work of one process; use :func:`rank` / :func:`is_main` inside it.
        processes: Number of processes (1 runs ``fn`` here, without a process group).
        *args: Positional arguments of ``fn``.
        backend: ``gloo`` or ``nccl``; default NCCL when there is a GPU per process, else gloo.
        **kwargs: Keyword arguments of ``fn``.

    Returns:
        What ``fn`` returned on rank 0.

    Raises:
        InvalidArgumentError: ``processes`` < 1, or more NCCL processes than GPUs.
    """
    import torch

    if processes < 1:
        raise InvalidArgumentError(f"processes must be >= 1, got {processes}")
    if processes == 1:
        return fn(*args, **kwargs)
    gpus = torch.cuda.device_count()
    backend = backend or ("nccl" if gpus >= processes else "gloo")
    if backend == "nccl" and gpus < processes:
        raise InvalidArgumentError(f"{processes} NCCL processes need {processes} GPUs, this machine has {gpus}",
                                   fix="use fewer processes or --backend gloo")
    from deepmia.engine.runtime import machine

    threads = max(1, int(machine()["cores"]) // processes)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="deepmia-ddp-") as tmp:
        result = Path(tmp) / "rank0.pkl"
        mp.start_processes(_worker, args=(fn, processes, _free_port(), backend, threads, args, kwargs, str(result)),
                           nprocs=processes, join=True, start_method="spawn")
        return pickle.loads(result.read_bytes()) if result.exists() else None
