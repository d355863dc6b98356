"""Durations and sizes the way ``docker ps`` writes them, for the board and ``deployment-watcher status``.

Standard library only: the client side (``watcher.clients``) and the server side (``watcher.web``)
both show them and import none of each other.
"""

from __future__ import annotations


def age(seconds: float) -> str:
    """42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


def age_changes_in(seconds: float) -> float:
    """Seconds until ``age(seconds)`` reads differently (a page showing it is current until then)."""
    if seconds < 0:
        return 1 - seconds  # "0s" until a second after the start
    length = next((length for length in (86400, 3600, 60) if seconds >= length), 1)
    return length - seconds % length


def size(value: float, *, separator: str = "") -> str:
    """1.5MiB (``separator`` between the number and the unit: the board writes 1.5 MiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f}{separator}{unit}"
    return f"{value:.0f}{separator}B"
