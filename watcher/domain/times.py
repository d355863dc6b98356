"""Times written down by others (a label, a CI/CD report): which can be the unix time of a deploy."""

from __future__ import annotations

EARLIEST = 946684800.0  # 2000-01-01: an earlier "time" in a report is a mistake (a duration, a zero)
# Beyond a day ahead of our clock is a unit mistake (milliseconds?), not clock skew.
FUTURE_SLACK_SECONDS = 86400.0


def in_the_future(seconds: float, *, now: float) -> bool:
    """Whether ``seconds`` lies too far ahead of ``now`` to be a deploy time (milliseconds, microseconds)."""
    return seconds > now + FUTURE_SLACK_SECONDS
