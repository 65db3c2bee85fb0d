"""The local backend of ``deepmia batch predict``: a pool of spawned worker processes.

Each worker loads the predictor once and reads, predicts and writes whole chunks of cases.

A worker that dies (killed, out of memory) breaks the pool; the chunks it had not returned are given to a new
pool, and their cases' records say ``retried``. Cases already returned are never run again.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from deepmia.errors import DeepmiaError

from .work import BatchJob, item_of, predict_items, skipped_record, write_case

__all__ = ["run_local", "run_chunk"]

#: How many times the chunks of a broken pool are given to a new one before the run gives up.
MAX_POOL_RESTARTS = 3

_worker: dict[str, Any] = {}


def _init(job: BatchJob) -> None:
    _worker["job"] = job
    _worker["predictor"] = job.load()
    _worker["writers"] = job.writers()


def run_chunk(payloads: Sequence[dict[str, Any]], attempt: int = 1) -> list[dict[str, Any]]:
    """Read, predict and write one chunk of cases in this worker (its ``attempt``-th run); returns the records."""
    job: BatchJob = _worker["job"]
    items = [item_of(p) for p in payloads]
    found, skipped, seconds = predict_items(job, _worker["predictor"], items)
    per = seconds / max(1, len(found))
    records = [write_case(job, item, result, writers=_worker["writers"], seconds=per, attempt=attempt)
               for item, result in found]
    by_name = {i.name: i for i in items}
    return records + [skipped_record(job, by_name[name], reason, attempt=attempt) for name, reason in skipped]


def run_local(
    job: BatchJob, chunks: Sequence[Sequence[dict[str, Any]]], *, workers: int,
    on_records: Callable[[list[dict[str, Any]]], None],
) -> int:
    """Run every chunk in a pool of ``workers`` spawned processes; ``on_records`` gets each chunk's records.

    Returns:
        How many times the pool broke (a worker died) and was started again.

    Raises:
        DeepmiaError: A worker's error (e.g. a :class:`~deepmia.errors.WriteError` for a full disk), or workers
            dying again and again.
    """
    context = multiprocessing.get_context("spawn")
    pending, restarts = list(chunks), 0
    while pending:
        lost = []
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(job,)) as pool:
            futures = {pool.submit(run_chunk, chunk, restarts + 1): chunk for chunk in pending}
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        chunk = futures.pop(future)
                        try:
                            records = future.result()
                        except BrokenProcessPool:
                            lost.append(chunk)
                            continue
                        on_records(records)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        pending = lost
        if pending:
            restarts += 1
            if restarts > MAX_POOL_RESTARTS:
                raise DeepmiaError(f"worker processes died {restarts} times; {sum(map(len, pending))} cases not done",
                                   path=job.out_dir, fix="look for memory exhaustion; the same command resumes")
    return restarts
