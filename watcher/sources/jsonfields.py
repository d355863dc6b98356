"""Fields of an engine's JSON read as the expected type, or an empty/absent value: never a raise.

A type check, not ``watcher.domain.text``'s cleaning (``labels.parse`` cleans the values that
become label values). Shared by the container and Swarm translations, which read the same kind
of JSON from the same engine and import none of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def object_(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def number(value: object) -> float | None:
    """A finite JSON number (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return result if math.isfinite(result) else None
