"""Giving freed heap memory back to the operating system after a burst of temporaries.

Rendering 1,000 deployments or encoding the state file makes megabytes of short-lived
objects; once freed, glibc keeps most of those pages, so the resident size stays at the
high-water mark for ever. ``malloc_trim`` hands the free pages back (microseconds to a few
milliseconds). Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; False where the C library cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
