"""Augmentation: random transforms draw parameters once and return a deterministic transform that applies them.

The split follows TorchIO (``RandomNoise`` draws, ``Noise`` applies): a deterministic transform can be replayed,
recorded as a dict history and rebuilt (:func:`from_history`), and inverted where the operation allows it.
Segmentation, classification and detection build their training augmentation from these pieces.

Example:
    >>> import numpy as np
    >>> from deepmia.transforms import RandomCompose, RandomMirror, RandomIntensity, Sample, from_history
    >>> random = RandomCompose([RandomMirror(axes=(0, 1)), RandomIntensity(scale=(0.9, 1.1))])
    >>> t = random.sample(np.random.default_rng(0), shape=(4, 4))   # draws parameters only
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> np.array_equal(t(x), from_history(t.history())(x))           # replay from the record
    True
    >>> np.allclose(t.inverse()(t(x)), x)
    True

Random streams: the three task-specific implementations this layer replaced (issue 17) drew in a different
order, so a seed now gives other augmentations than before; the ranges and probabilities are unchanged. Two
details moved with it: classification's 3D rotation is composed about array axes 0, 1, 2 like segmentation's
(before, in ``grid_sample``'s reversed axis order; 2D is the same), and detection's crop origin is drawn over the
rounded size of the rescaled image (before, its unrounded size: at most half a pixel apart).

Modules: :mod:`.base` (Sample, Transform, RandomTransform, Compose, history, batches), :mod:`.spatial` (Mirror,
Rot90, Affine, Resize, Crop), :mod:`.intensity` (Intensity, Contrast, Gamma, Noise, Blur).
"""

from __future__ import annotations

from deepmia.transforms.base import (
    Compose,
    RandomCompose,
    RandomTransform,
    Sample,
    Transform,
    apply_batch,
    from_history,
    transforms,
)
from deepmia.transforms.intensity import (
    Blur,
    Contrast,
    Gamma,
    Intensity,
    Noise,
    RandomBlur,
    RandomContrast,
    RandomGamma,
    RandomIntensity,
    RandomNoise,
)
from deepmia.transforms.spatial import (
    Affine,
    Crop,
    Mirror,
    RandomAffine,
    RandomCrop,
    RandomMirror,
    RandomResize,
    RandomRot90,
    Resize,
    Rot90,
    crop_boxes,
    mirror_boxes,
    resize_array,
    rotation_matrix,
)

__all__ = [
    "Sample", "Transform", "RandomTransform", "Compose", "RandomCompose", "apply_batch", "from_history",
    "transforms",
    "Mirror", "Rot90", "Affine", "Resize", "Crop",
    "RandomMirror", "RandomRot90", "RandomAffine", "RandomResize", "RandomCrop",
    "Intensity", "Contrast", "Gamma", "Noise", "Blur",
    "RandomIntensity", "RandomContrast", "RandomGamma", "RandomNoise", "RandomBlur",
    "crop_boxes", "mirror_boxes", "resize_array", "rotation_matrix",
]
