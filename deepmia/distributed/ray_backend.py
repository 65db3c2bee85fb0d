"""The Ray backend of ``deepmia batch predict``: a streaming Ray Data pipeline over a running cluster.

Reading is a stage of Ray tasks, the model lives in a pool of actors (each loads the predictor once), writing is
a stage of Ray tasks, and the driver only appends the records that come out of the last stage to the manifest.
Ray Data streams blocks through the three stages with back-pressure, so memory stays bounded however many cases
there are. Ray restarts the actors and re-runs the tasks of a node that died; a case run again carries more than
one attempt mark (see :mod:`deepmia.distributed.work`) and the driver records each case once.

Resources: each model actor asks for ``worker_cpus`` CPUs (0.75 by default) and each read/write task for 0.25, so
on nodes of one CPU (``ray start --num-cpus 1``) one actor fits per node with room left for the tasks.
"""

from __future__ import annotations

import json
import logging
import pickle
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from deepmia.errors import DeepmiaError, InvalidArgumentError, MissingDependencyError

from .work import BatchJob, LoadedItem, item_of, predict_items, skipped_record, worker_name, write_case

__all__ = ["connect", "run_ray", "CONNECT_TIMEOUT_S"]

#: Seconds ``connect`` waits for a cluster before giving up (the address must answer within this).
CONNECT_TIMEOUT_S = 20.0
TASK_CPUS = 0.25


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the extra deepmia[ray] installs)
    except ImportError as exc:
        raise MissingDependencyError("--ray needs Ray Data", fix="pip install 'deepmia[ray]'") from exc
    return ray


def _probe(address: str, timeout: float) -> None:
    """Refuse, within ``timeout`` seconds, an address ``host:port`` where nothing answers."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgumentError(f"--ray {address!r} is not an address HOST:PORT or 'auto'",
                                   fix="give the address `ray start --head` printed, e.g. 127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise InvalidArgumentError(f"no Ray cluster answers at {address}: {exc}",
                                   fix="start one with `ray start --head --port PORT`, or give its address") from exc


def connect(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> float:
    """Connect this process to the Ray cluster at ``address`` (``HOST:PORT`` or ``auto``); returns the seconds.

    Raises:
        InvalidArgumentError: Nothing answers at the address, or the cluster did not accept the connection
            within ``timeout`` seconds (never a hang).
        MissingDependencyError: Ray Data is not installed.
    """
    ray = _ray()
    started = time.perf_counter()
    if ray.is_initialized():
        return 0.0
    if address != "auto":
        _probe(address, min(timeout, 5.0))
    outcome: dict[str, Any] = {}

    def init() -> None:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:  # noqa: BLE001 (reported below as the user's error)
            outcome["error"] = exc

    if threading.current_thread() is threading.main_thread():
        _with_alarm(init, timeout, outcome)  # ray.init in the main thread (its signal handlers need it)
    else:
        thread = threading.Thread(target=init, daemon=True, name="ray-connect")
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            outcome["error"] = f"no answer within {timeout:.0f} s"
    if "error" in outcome:
        raise InvalidArgumentError(f"cannot join the Ray cluster at {address}: {outcome['error']}",
                                   fix="check `ray status` on the head node, or give its address with --ray")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return time.perf_counter() - started


def _with_alarm(fn: Callable[[], None], timeout: float, outcome: dict[str, Any]) -> None:
    """Run ``fn`` in the main thread, interrupted by SIGALRM after ``timeout`` seconds."""
    import signal

    def expired(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"no answer within {timeout:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        fn()
    except TimeoutError as exc:
        outcome["error"] = exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read(batch: dict[str, Any]) -> dict[str, Any]:
    """Ray task: read each input's image (a read error is kept, to be reported as that input's skip reason)."""
    import numpy as np

    images, errors = [], []
    for payload in batch["item"]:
        try:
            images.append(pickle.dumps(item_of(json.loads(payload)).read()))
            errors.append("")
        except DeepmiaError as exc:
            images.append(b"")
            errors.append(str(exc))
    return {"item": batch["item"], "image": np.array(images, dtype=object), "error": np.array(errors, dtype=object)}


class _Predict:
    """Ray actor: the predictor, loaded once; predicts the batches it is given."""

    def __init__(self, job: BatchJob) -> None:
        self.job, self.predictor, self.worker = job, job.load(), worker_name()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        items = []
        for payload, image, error in zip(batch["item"], batch["image"], batch["error"], strict=True):
            it = item_of(json.loads(payload))
            items.append(LoadedItem(it.path, it.name, it.series_uid, it.files,
                                    image=pickle.loads(image) if not error else None,
                                    error=DeepmiaError(error) if error else None))
        found, skipped, seconds = predict_items(self.job, self.predictor, items)
        results = {item.name: pickle.dumps(result) for item, result in found}
        reasons = dict(skipped)
        per = seconds / max(1, len(found))
        return {
            "item": batch["item"],
            "result": np.array([results.get(i.name, b"") for i in items], dtype=object),
            "reason": np.array([reasons.get(i.name, "") for i in items], dtype=object),
            "seconds": np.array([per] * len(items)),
            "worker": np.array([self.worker] * len(items), dtype=object),
        }


def _write(batch: dict[str, Any], job: BatchJob) -> dict[str, Any]:
    """Ray task: write each predicted case atomically; returns the manifest records as JSON."""
    import numpy as np

    writers = job.writers()
    records = []
    for payload, result, reason, seconds, worker in zip(
        batch["item"], batch["result"], batch["reason"], batch["seconds"], batch["worker"], strict=True
    ):
        item = item_of(json.loads(payload))
        if result:
            record = write_case(job, item, pickle.loads(result), writers=writers, seconds=float(seconds),
                                worker=str(worker))
        else:
            record = skipped_record(job, item, str(reason) or "not predicted")
        records.append(json.dumps(record, default=str))
    return {"record": np.array(records, dtype=object)}


def run_ray(
    job: BatchJob, payloads: Sequence[dict[str, Any]], *, workers: int, chunk: int,
    on_records: Callable[[list[dict[str, Any]]], None], worker_cpus: float = 0.75,
) -> None:
    """Run every case through the Ray Data pipeline (read tasks -> model actors -> write tasks).

    The driver must be connected (:func:`connect`). ``on_records`` gets the records as they stream out.

    Raises:
        DeepmiaError: A worker's error (e.g. a full disk), with Ray's wrapping taken off.
    """
    ray = _ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    rows = [{"item": json.dumps(p)} for p in payloads]
    blocks = max(1, -(-len(rows) // chunk))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(_read, batch_size=chunk, num_cpus=TASK_CPUS)
    ds = ds.map_batches(_Predict, fn_constructor_args=(job,), batch_size=chunk,
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=worker_cpus)
    ds = ds.map_batches(_write, fn_kwargs={"job": job}, batch_size=chunk, num_cpus=TASK_CPUS)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            on_records([json.loads(r) for r in batch["record"]])
    except Exception as exc:
        cause = _user_error(exc)
        if cause is not None:
            raise cause from exc
        raise


def _user_error(exc: BaseException) -> DeepmiaError | None:
    """The deepmia error a Ray task or actor raised, from under Ray's wrapping (None when there is none)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DeepmiaError):
            return exc
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None
