"""Fields of an engine's JSON read as the expected type, or an empty/absent value: never a raise.

A type check, not ``watcher.domain.text``'s cleaning (``labels.parse`` cleans the values that
become label values). Shared by the container and Swarm translations, which read the same kind
of JSON from the same engine and import none of each other. Counts and times are read into the
ranges the state holds (``watcher.domain.limits``): what a hostile or buggy engine sends must not
become a state file the next start cannot load.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import Any

from watcher.domain import times
from watcher.domain.limits import MAX_COUNT

_NANOS = re.compile(r"(\.\d{6})\d+")


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


def count(value: object) -> int:
    """A count of the engine's (tasks, replicas) within what the state holds: 0 to 2⁶³ − 1.

    The engine's counts are uint64: one of 2⁶³ or more is a negative that wrapped around
    (2⁶⁴ − 1 is −1, its arithmetic went below zero), so it reads 0, as a negative does; so does
    a value that is no number.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        whole = value  # exactly: 2**63 - 1 as a float would be 2**63
    else:
        number_ = number(value)
        whole = int(number_) if number_ is not None else 0
    return whole if 0 <= whole <= MAX_COUNT else 0


def time(value: object) -> float | None:
    """An engine's RFC 3339 time (nanoseconds, ``Z`` or an offset) → unix seconds; None for the
    zero time, for text that is no time, and for one before 1970 or after 9999 (an offset can
    carry the last second of 9999 beyond it), which no state file may hold (``times.LATEST``)."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    # Docker gives nanoseconds; keep microseconds, which every Python 3.11 parses.
    text_ = _NANOS.sub(r"\1", value.replace("Z", "+00:00"))
    try:
        seconds = dt.datetime.fromisoformat(text_).timestamp()
    except (ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds <= times.LATEST else None


def event_time(event: Mapping[str, Any]) -> float | None:
    """Unix seconds of an engine event, from ``timeNano`` (``time`` on very old engines); None if
    neither is a number, or it lies before 1970 or after 9999 (``times.LATEST``, as ``time``)."""
    nanos = number(event.get("timeNano"))
    seconds = nanos / 1e9 if nanos is not None else number(event.get("time"))
    return seconds if seconds is not None and 0 <= seconds <= times.LATEST else None
