"""Name registries: components register themselves where they are defined and are built by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from deepmia._validate import look_up_option

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to components of one kind (readers, networks, losses, steps, ...).

    Example:
        >>> steps = Registry("step")
        >>> @steps.register("identity")
        ... def identity(x):
        ...     return x
        >>> steps.get("identity")(3)
        3
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a component under ``name``."""

        def decorator(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        """Return the component called ``name``; the error lists the valid names."""
        return self._items[look_up_option(name, self._items, what=self.kind)]

    def names(self) -> list[str]:
        """Sorted names of every registered component."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
