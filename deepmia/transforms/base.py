"""The sample-then-apply split: deterministic transforms, their random twins, composition, history and batches.

A **deterministic** :class:`Transform` holds every parameter it needs (a frozen dataclass), so applying it twice
gives the same output, it can be written to a dict history and rebuilt (:func:`from_history`), and where the
operation is invertible :meth:`Transform.inverse` undoes it. A **random** :class:`RandomTransform` only draws
parameters from a ``numpy.random.Generator`` and returns its deterministic twin; it never touches pixels.

Transforms act on a :class:`Sample` (a channel-first image, an optional label map, optional boxes), on a bare
channel-first array, or on an :class:`~deepmia.image.Image`. Arrays may be NumPy arrays or torch tensors; the
result has the input's type. Augmentation works in voxel space: an ``Image`` keeps its affine (as in TorchIO),
label maps stay integral (nearest neighbour), and boxes (corner format ``(lo..., hi...)`` in pixels, axis 0
first) follow the pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deepmia.errors import InvalidArgumentError
from deepmia.registry import Registry

__all__ = ["Sample", "Transform", "RandomTransform", "Compose", "RandomCompose", "apply_batch", "from_history",
           "transforms", "register"]

#: Deterministic transforms by name (what :func:`from_history` rebuilds from).
transforms: Registry[type[Transform]] = Registry("transform")


def register(cls: type[Transform]) -> type[Transform]:
    """Class decorator: register a deterministic transform under its class name."""
    return transforms.register(cls.__name__)(cls)


@dataclass
class Sample:
    """The arrays one transform moves together.

    Attributes:
        image: Channel-first pixels ``(C, *spatial)`` (NumPy or torch).
        label: Channel-first integral label map ``(C, *spatial)`` on the image's grid, or ``None``.
        boxes: Corner boxes ``(N, 2 * dims)`` in pixels (``lo`` then ``hi``, axis 0 first), or ``None``.
        box_labels: Class index of each box ``(N,)``, or ``None``.
    """

    image: Any
    label: Any = None
    boxes: np.ndarray | None = None
    box_labels: np.ndarray | None = None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial size of the image in pixels."""
        return tuple(int(s) for s in self.image.shape[1:])


def _plain(value: Any) -> Any:
    """A parameter as JSON-friendly Python values (tuples to lists, NumPy scalars to numbers)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _frozen(value: Any) -> Any:
    """The inverse of :func:`_plain` for dataclass fields: lists back to tuples."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class Transform:
    """A deterministic transform; subclasses are frozen dataclasses whose fields are the parameters.

    Subclasses override the parts they change: :meth:`apply_image`, :meth:`apply_label`, :meth:`apply_boxes` and,
    when the spatial size changes, :meth:`output_shape`. The defaults leave that part unchanged.
    """

    #: Whether :meth:`inverse` exists.
    invertible: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """The registered name (the class name)."""
        return type(self).__name__

    @property
    def is_identity(self) -> bool:
        """True when applying the transform changes nothing (zero strength)."""
        return False

    def apply_image(self, x: Any) -> Any:
        """The transformed channel-first image (never changes ``x`` in place)."""
        return x

    def apply_label(self, y: Any) -> Any:
        """The transformed channel-first label map (stays integral)."""
        return y

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(N, 2d)`` of an image of spatial ``shape`` and their labels, after the transform."""
        return boxes, labels

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the output for an input of spatial ``shape``."""
        return tuple(shape)

    def inverse(self) -> Transform:
        """The transform that undoes this one.

        Raises:
            InvalidArgumentError: The transform loses information (crops, resizing, blurring).
        """
        raise InvalidArgumentError(f"{self.name} cannot be inverted (it loses information)",
                                   fix="replay the history forward instead, or leave it out of inverted pipelines")

    def params(self) -> dict[str, Any]:
        """The parameters as JSON-friendly values."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def history(self) -> list[dict[str, Any]]:
        """``[{"name": ..., **params}]``: enough to rebuild the transform with :func:`from_history`."""
        return [{"name": self.name, **self.params()}]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Transform:
        """Rebuild from :meth:`params`.

        Raises:
            InvalidArgumentError: A parameter the transform does not have, or one missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(params) - names)
        if unknown:
            raise InvalidArgumentError(f"{cls.__name__} has no parameter(s) {unknown}; it has {sorted(names)}")
        try:
            return cls(**{k: _frozen(v) for k, v in params.items()})
        except TypeError as exc:
            raise InvalidArgumentError(f"{cls.__name__}: {exc}", fix=f"give {sorted(names)}") from None

    def __call__(self, data: Any) -> Any:
        """Apply to a :class:`Sample`, an :class:`~deepmia.image.Image` or a channel-first array.

        An identity transform returns its input unchanged (the same object).
        """
        from deepmia.image import Image

        if self.is_identity:
            return data
        if isinstance(data, Sample):
            boxes, box_labels = data.boxes, data.box_labels
            if boxes is not None:
                boxes = np.asarray(boxes, np.float32)
                box_labels = np.zeros(len(boxes), np.int64) if box_labels is None else np.asarray(box_labels)
                boxes, box_labels = self.apply_boxes(boxes, box_labels, data.spatial_shape)
                if data.box_labels is None:
                    box_labels = None
            label = None if data.label is None else self.apply_label(data.label)
            return Sample(self.apply_image(data.image), label, boxes, box_labels)
        if isinstance(data, Image):
            array = self.apply_label(data.array) if data.kind == "label" else self.apply_image(data.array)
            if array.shape[1:] == data.array.shape[1:]:
                return data.with_array(array)
            return data.with_geometry(array, data.affine)
        return self.apply_image(data)

    @classmethod
    def apply_batch(cls, steps: Sequence[Transform], images: Any, labels: Any) -> None:
        """Apply ``steps[i]`` to sample ``i`` of the batch tensors, in place (shape-preserving steps only).

        Subclasses override this to run a whole batch in one call (one ``grid_sample``, one multiply).
        """
        for i, t in enumerate(steps):
            if t.is_identity:
                continue
            images[i] = t.apply_image(images[i])
            if labels is not None:
                labels[i] = t.apply_label(labels[i])


@register
@dataclass(frozen=True)
class Compose(Transform):
    """Deterministic transforms applied in order (what a :class:`RandomCompose` returns)."""

    steps: tuple[Transform, ...] = ()

    @property
    def invertible(self) -> bool:  # type: ignore[override]
        """Whether every step can be inverted."""
        return all(s.invertible for s in self.steps)

    @property
    def is_identity(self) -> bool:
        """True when every step is the identity."""
        return all(s.is_identity for s in self.steps)

    def apply_image(self, x: Any) -> Any:
        """Each step's :meth:`~Transform.apply_image` in order."""
        for s in self.steps:
            if not s.is_identity:
                x = s.apply_image(x)
        return x

    def apply_label(self, y: Any) -> Any:
        """Each step's :meth:`~Transform.apply_label` in order."""
        for s in self.steps:
            if not s.is_identity:
                y = s.apply_label(y)
        return y

    def apply_boxes(self, boxes: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each step's :meth:`~Transform.apply_boxes` in order, following the shape."""
        for s in self.steps:
            boxes, labels = s.apply_boxes(boxes, labels, shape)
            shape = s.output_shape(shape)
        return boxes, labels

    def output_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape after every step."""
        for s in self.steps:
            shape = s.output_shape(shape)
        return tuple(shape)

    def inverse(self) -> Compose:
        """The inverse steps in reverse order.

        Raises:
            InvalidArgumentError: A step cannot be inverted.
        """
        return Compose(tuple(s.inverse() for s in reversed(self.steps)))

    def history(self) -> list[dict[str, Any]]:
        """The steps' histories, concatenated (identity steps included, so a replay draws nothing)."""
        return [h for s in self.steps for h in s.history()]

    def params(self) -> dict[str, Any]:
        """``{"steps": history}``."""
        return {"steps": self.history()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Compose:
        """Rebuild from ``{"steps": history}``."""
        return from_history(params.get("steps", []))


def from_history(history: Sequence[Mapping[str, Any]]) -> Compose:
    """Rebuild the deterministic transforms recorded by :meth:`Transform.history`.

    Raises:
        InvalidArgumentError: An entry without a name, an unknown transform name (the message suggests the closest),
            or parameters the transform does not take.
    """
    steps = []
    for entry in history:
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise InvalidArgumentError(f"history entry {entry!r} has no 'name'",
                                       fix="give entries as written by Transform.history()")
        params = {k: v for k, v in entry.items() if k != "name"}
        steps.append(transforms.get(entry["name"]).from_params(params))
    return Compose(tuple(steps))


def fires(rng: np.random.Generator, p: float, n: int) -> np.ndarray:
    """Which of ``n`` samples a step with probability ``p`` applies to (no draw when ``p`` is 0 or 1)."""
    if p >= 1:
        return np.ones(n, bool)
    if p <= 0:
        return np.zeros(n, bool)
    return rng.random(n) < p


def uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    """``n`` uniform draws from ``[low, high)`` (``low`` itself, without a draw, when the range is empty)."""
    return np.full(n, float(low)) if high == low else rng.uniform(low, high, n)


def check_probability(name: str, p: float) -> float:
    """Refuse a probability outside ``[0, 1]``.

    Raises:
        InvalidArgumentError: ``p`` outside ``[0, 1]``.
    """
    if not 0 <= p <= 1:
        raise InvalidArgumentError(f"{name}={p!r} is not a probability", fix="give a value in [0, 1]")
    return float(p)


def check_interval(name: str, interval: Sequence[float], *, low: float | None = None) -> tuple[float, float]:
    """Refuse a range that is not ``(a, b)`` with ``a <= b`` (and ``a >= low`` when given).

    Raises:
        InvalidArgumentError: Not two numbers, reversed, or below ``low``.
    """
    if len(interval) != 2 or interval[0] > interval[1] or (low is not None and interval[0] < low):
        bound = "" if low is None else f" and a >= {low}"
        raise InvalidArgumentError(f"{name}={tuple(interval)!r} is not a range (a, b)",
                                   fix=f"give two numbers with a <= b{bound}")
    return float(interval[0]), float(interval[1])


class RandomTransform:
    """Draws the parameters of a deterministic transform; never touches pixels.

    Subclasses implement :meth:`sample` and may implement :meth:`sample_many` (draws for a whole batch at once,
    for speed). Calling ``random(sample, rng)`` draws and applies once and returns the output with the
    deterministic transform that made it (replay it, store its history, invert it).
    """

    #: Whether every draw keeps the spatial shape (then a :class:`RandomCompose` can draw a batch step by step).
    keeps_shape: ClassVar[bool] = False

    def sample(self, rng: np.random.Generator, shape: Sequence[int], boxes: np.ndarray | None = None) -> Transform:
        """Draw parameters for an input of spatial ``shape`` (and ``boxes``, for box-aware draws)."""
        return self.sample_many(rng, shape, 1)[0]

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """Draw ``n`` independent transforms for inputs of spatial ``shape`` (without boxes)."""
        if type(self).sample is RandomTransform.sample:
            raise NotImplementedError(f"{type(self).__name__} implements neither sample nor sample_many")
        return [self.sample(rng, shape) for _ in range(n)]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> tuple[Sample, Transform]:
        """Draw parameters for ``sample`` and apply them: ``(output, transform)``."""
        t = self.sample(rng, sample.spatial_shape, sample.boxes)
        return t(sample), t


class RandomCompose(RandomTransform):
    """Random transforms drawn in order; each draw sees the shape (and boxes) the previous steps produce.

    Args:
        steps: The random transforms.
    """

    def __init__(self, steps: Sequence[RandomTransform]) -> None:
        self.steps = list(steps)

    @property
    def keeps_shape(self) -> bool:  # type: ignore[override]
        """Whether every step keeps the shape."""
        return all(s.keeps_shape for s in self.steps)

    def sample_many(self, rng: np.random.Generator, shape: Sequence[int], n: int) -> list[Transform]:
        """``n`` independent draws; step by step over the batch when every step keeps the shape."""
        if not self.keeps_shape:
            return [self.sample(rng, shape) for _ in range(n)]
        columns = [step.sample_many(rng, shape, n) for step in self.steps]
        return [Compose(tuple(row)) for row in zip(*columns, strict=True)]

    def sample(self, rng: np.random.Generator, shape: Sequence[int], boxes: np.ndarray | None = None) -> Compose:
        """One :class:`Compose` with one deterministic step per random step."""
        out = []
        for step in self.steps:
            t = step.sample(rng, shape, boxes)
            if boxes is not None:
                boxes, _ = t.apply_boxes(np.asarray(boxes, np.float32), np.zeros(len(boxes), np.int64), shape)
            shape = t.output_shape(shape)
            out.append(t)
        return Compose(tuple(out))


def apply_batch(transforms: Sequence[Transform], images: Any, labels: Any = None) -> tuple[Any, Any]:
    """Apply ``transforms[i]`` to sample ``i`` of a batch ``(B, C, *spatial)`` (and its label maps).

    Transforms that share their structure (the same step types in the same order, as drawn from one
    :class:`RandomCompose`) run step by step over the whole batch, so a step such as an affine warp is one call
    for every sample that needs it. The inputs are not changed. Every step must keep the spatial shape.

    Returns:
        ``(images, labels)``; ``labels`` is ``None`` when none were given.

    Raises:
        InvalidArgumentError: The number of transforms differs from the batch size, or a step changes the shape.
    """
    import torch

    if len(transforms) != len(images):
        raise InvalidArgumentError(f"{len(transforms)} transforms for a batch of {len(images)}",
                                   fix="draw one transform per sample")
    numpy_in = isinstance(images, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(images)) if numpy_in else images
    y = torch.from_numpy(np.ascontiguousarray(labels)) if isinstance(labels, np.ndarray) else labels
    shape = tuple(x.shape[2:])
    columns = [t.steps if isinstance(t, Compose) else (t,) for t in transforms]
    kinds = [tuple(map(type, c)) for c in columns]
    if any(type(t).output_shape is not Transform.output_shape and t.output_shape(shape) != shape
           for c in columns for t in c):
        raise InvalidArgumentError("apply_batch needs transforms that keep the spatial shape",
                                   fix="apply shape-changing transforms (crops, resizing, 90-degree turns) per sample")
    x = x.clone()
    y = None if y is None else y.clone()
    if all(k == kinds[0] for k in kinds):
        for column in zip(*columns, strict=True):
            if not all(s.is_identity for s in column):
                type(column[0]).apply_batch(column, x, y)
    else:
        Transform.apply_batch(transforms, x, y)
    if numpy_in:
        return x.numpy(), None if y is None else y.numpy()
    return x, y
