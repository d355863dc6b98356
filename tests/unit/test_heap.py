"""Freed heap memory handed back to the operating system; long-lived objects kept out of collections."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import platform
import weakref

from watcher import heap


def test_release_free_memory_works_on_glibc_and_is_harmless() -> None:
    """On glibc (this project's Debian base) malloc_trim is found and runs; it never raises."""
    released = heap.release_free_memory()
    if platform.libc_ver()[0] == "glibc":
        assert released


def test_freeze_keeps_what_lives_now_out_of_full_collections() -> None:
    """Objects alive at the freeze are no longer walked by the collector; later ones are."""
    before = [object()]
    try:
        heap.freeze_long_lived()
        after = [object()]
        walked = {id(o) for o in gc.get_objects()}
        assert id(before) not in walked and id(after) in walked
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


class Cycle:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


async def test_keep_frozen_freezes_what_came_and_frees_frozen_cycles_at_the_recollection() -> None:
    """What came since is frozen at each round (after a collection of it alone); a cycle frozen while alive and
    dropped afterwards is freed by the round that unfreezes everything and walks it once."""
    now = [0.0]
    cycle = Cycle()
    alive = weakref.ref(cycle)
    task = asyncio.create_task(heap.keep_frozen(every=0.01, recollect=10.0, clock=lambda: now[0]))
    try:
        await _rounds(2)
        assert id(cycle) not in {id(o) for o in gc.get_objects()}  # frozen
        del cycle
        await _rounds(2)
        assert alive() is not None  # frozen garbage: no round walks it
        now[0] = 10.0
        await _rounds(2)
        assert alive() is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.unfreeze()


async def _rounds(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0.02)
