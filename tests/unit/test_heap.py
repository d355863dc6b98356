"""Freed heap memory handed back to the operating system."""

from __future__ import annotations

import platform

from watcher import heap


def test_release_free_memory_works_on_glibc_and_is_harmless() -> None:
    """On glibc (this project's Debian base) malloc_trim is found and runs; it never raises."""
    released = heap.release_free_memory()
    if platform.libc_ver()[0] == "glibc":
        assert released
