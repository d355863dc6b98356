"""The ranges of the integers the state holds: what its file, and any 64-bit reader of it, can hold.

Sources clamp what an engine sends into them (and times into 0 … ``times.LATEST``), the state
machine's sums saturate at them, and the codec checks them when it loads the file: a number
outside is never written, so a file the watcher wrote always loads.
"""

from __future__ import annotations

MAX_COUNT = 2**63 - 1  # counts, revisions, exit codes (from −2⁶³): a signed 64-bit integer
MAX_NANOS = 2**64 - 1  # CPU nanoseconds: a cgroup's counter is 64 bits unsigned


def add_nanos(total: int, more: int) -> int:
    """CPU nanoseconds added up, saturating: samples each within 64 bits (a hostile stats source's)
    could add up beyond them as containers restart and go, and the counter must stay one a file holds."""
    return min(total + more, MAX_NANOS)
