"""Batch inference at scale: a local process pool or a Ray cluster, with a resumable manifest (issue 15).

``deepmia batch predict`` is :func:`batch_predict`: the same outputs as ``deepmia predict`` (the same writers),
each file written atomically, each finished case recorded once in ``OUT/manifest.jsonl`` (and, with a catalog, in
its ``predictions`` table), so a re-run resumes where the last one stopped. Ray is imported only for ``--ray``.

Example:
    >>> from deepmia.distributed import batch_predict                               # doctest: +SKIP
    >>> batch_predict("hippocampus", "scans/", "out/", ray="auto", workers=2)       # doctest: +SKIP
"""

from .inputs import resolve_inputs
from .manifest import MANIFEST, Manifest
from .run import BatchOutcome, batch_predict

__all__ = ["MANIFEST", "BatchOutcome", "Manifest", "batch_predict", "resolve_inputs"]
