"""The heap of a process that runs for months: freed pages handed back, and the cyclic
garbage collector kept off what lives for ever.

Rendering 1,000 deployments or encoding the state file makes megabytes of short-lived
objects; once freed, glibc keeps most of those pages, so the resident size stays at the
high-water mark for ever. ``malloc_trim`` hands the free pages back (microseconds to a few
milliseconds). Elsewhere (musl, macOS) this does nothing.

A full collection walks every container object, on the event loop: the libraries' modules,
classes and functions alone are ~44,000 objects and 8 ms a collection, and 1,000 loaded
deployments add ~65,000 and 18 ms. They live as long as the process, so once they are in
place ``freeze_long_lived`` moves them out of the collector's sight (``gc.freeze``); they are
still freed as usual when nothing refers to them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
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


def freeze_long_lived() -> None:
    """Exclude every object alive now from later collections: call once, after start-up."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
