"""Argument checks shared across deepmia, with messages that name the parameter and the closest valid option."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from deepmia.errors import InvalidArgumentError


def look_up_option(value: str, choices: Iterable[str], *, what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming the closest valid option.

    Args:
        value: The name the user gave.
        choices: The valid names.
        what: What kind of thing is named, e.g. ``"step"`` or ``"reader"``.

    Raises:
        InvalidArgumentError: ``value`` is not a valid choice.
    """
    options = sorted(choices)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InvalidArgumentError(f"unknown {what} {value!r}; {hint}valid: {', '.join(options)}")


def check_range(name: str, value: float, *, low: float | None = None, high: float | None = None) -> float:
    """Check that ``low <= value <= high`` and return ``value``.

    Raises:
        InvalidArgumentError: The value is outside the allowed range.
    """
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise InvalidArgumentError(f"{name}={value!r} is outside the allowed range {bounds}")
    return value
