"""Freed heap memory handed back to the operating system; long-lived objects kept out of collections."""

from __future__ import annotations

import gc
import platform

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
