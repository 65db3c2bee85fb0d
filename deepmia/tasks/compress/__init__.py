"""Model compression: a smaller model directory from a trained one, by distillation and/or structured pruning.

``compress(model_dir, out_dir, dataset_dir, CompressOptions(...))`` writes an ordinary model directory (same plan
format, narrower network of the same family) that every deepmia command reads, plus ``compression.json``: the
teacher, the method and the parameter counts. Classification (basic-block ResNets): distillation and pruning;
segmentation (DynUNet): distillation. See ``docs/deployment.md`` (Compression).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deepmia.tasks.compress.common import COMPRESSION_FILE, CompressOptions

__all__ = ["compress", "CompressOptions", "COMPRESSION_FILE"]


def compress(
    model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], dataset_dir: str | os.PathLike[str],
    options: CompressOptions, *, cache: str | os.PathLike[str] | None = None, say: Any = print,
) -> dict[str, Any]:
    """Compress ``model_dir`` into ``out_dir``, training on ``dataset_dir`` (the dataset the model was trained on).

    Returns:
        The compression record (``out_dir/compression.json``).

    Raises:
        InvalidArgumentError: A bad option, an output over a model directory, or a task or network that cannot
            be compressed (the supported ones are named).
        DatasetError: The dataset lacks the model's training or validation cases.
    """
    from deepmia.errors import InvalidArgumentError
    from deepmia.tasks import task_of_model
    from deepmia.tasks.compress.common import check_out

    options.check()
    model_dir, out = Path(model_dir), Path(out_dir)
    task = task_of_model(model_dir).name
    check_out(model_dir, out)
    if task == "classify":
        from deepmia.tasks.compress.classify import compress_classifier

        return compress_classifier(model_dir, out, Path(dataset_dir), options, say=say)
    if task == "segment":
        from deepmia.tasks.compress.segment import compress_segmenter

        return compress_segmenter(model_dir, out, Path(dataset_dir), options, say=say,
                                  cache=None if cache is None else Path(cache))
    raise InvalidArgumentError(f"compression of a {task} model is not supported; supported: classification "
                               "(ResNet: --distill, --prune) and segmentation (DynUNet: --distill)", path=model_dir)
