"""``deepmia catalog scan --ray``: the DICOM headers of a very large tree parsed as Ray tasks.

Only header parsing moves to the cluster; the walk, the comparison with the catalog and every database write stay
in the calling process (the catalog's one writer), so a scan on Ray is as kill-safe and incremental as a local one.
The files must be readable at the same paths on every node (a shared file system).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["ray_header_reader"]

#: Files per Ray task: a task parses a few hundred headers, so scheduling costs little per file.
FILES_PER_TASK = 256


def _parse(paths: list[str]) -> list[dict[str, Any]]:
    from deepmia.data.catalog import read_header

    return [read_header(p) for p in paths]


def ray_header_reader(address: str, *, files_per_task: int = FILES_PER_TASK,
                      in_flight: int | None = None) -> Callable[[list[str]], Iterator[dict[str, Any]]]:
    """A ``reader`` for :func:`deepmia.data.catalog.scan` that parses headers as tasks on the Ray cluster.

    Args:
        address: The cluster (``HOST:PORT`` or ``auto``); joined now, so a bad address fails before the walk.
        files_per_task: Files each task parses.
        in_flight: Tasks submitted and not yet collected (bounds the driver's memory); default twice the cluster's
            CPUs.

    Raises:
        InvalidArgumentError: Nothing answers at ``address`` (within seconds).
    """
    from .ray_backend import _ray, connect

    connect(address)
    ray = _ray()
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    remote = ray.remote(num_cpus=0.5)(_parse)

    def read(paths: list[str]) -> Iterator[dict[str, Any]]:
        chunks = (paths[i:i + files_per_task] for i in range(0, len(paths), files_per_task))
        pending: list[Any] = []
        for chunk in chunks:
            pending.append(remote.remote(chunk))
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(done[0])
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done[0])

    return read
