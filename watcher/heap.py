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

Deployments also come after the start (5,000 reported through the API make a full collection
of 40-55 ms, a stall every event stream client waits behind), so ``keep_frozen`` collects and
freezes again every FREEZE_SECONDS: a full collection then walks only what came since. A cycle
frozen while alive and dropped later is not seen by those, so every RECOLLECT_SECONDS
everything is unfrozen and walked once: such garbage lives an hour at most.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from typing import NoReturn

FREEZE_SECONDS = 60.0
RECOLLECT_SECONDS = 3600.0


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


async def keep_frozen(
    *, every: float = FREEZE_SECONDS, recollect: float = RECOLLECT_SECONDS, clock: Callable[[], float] = time.monotonic
) -> NoReturn:
    """Freeze what came since the last freeze every ``every`` seconds, after a collection of it alone (cheap:
    frozen objects are not walked); every ``recollect`` seconds, of everything (one full pause)."""
    walked_all = clock()
    while True:
        await asyncio.sleep(every)
        if clock() - walked_all >= recollect:
            gc.unfreeze()
            walked_all = clock()
        gc.collect()
        gc.freeze()
