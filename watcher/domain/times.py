"""Times written down by others (a label, a CI/CD report): which can be the unix time of a deploy.

One rule for both: such a time only says when a rollout started, for its duration. It is used
when plausible (``implausible``), else refused (the API answers 400) or replaced by the
container's creation time (a label, with a warning). The progress deadline never counts from
it: it counts from when the watcher learned of the rollout, so a time from a CI job that ran
long before cannot fail a rollout at once.
"""

from __future__ import annotations

LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: no time the watcher keeps lies beyond (nor before 0)
EARLIEST = 946684800.0  # 2000-01-01: an earlier "time" in a report is a mistake (a duration, a zero)
# Beyond a day ahead of our clock is a unit mistake (milliseconds?), not clock skew.
FUTURE_SLACK_SECONDS = 86400.0


def in_the_future(seconds: float, *, now: float) -> bool:
    """Whether ``seconds`` lies too far ahead of ``now`` to be a deploy time (milliseconds, microseconds)."""
    return seconds > now + FUTURE_SLACK_SECONDS


def implausible(seconds: float, *, now: float) -> str:
    """Why ``seconds`` cannot be the unix time a deploy started, or '' when it can be."""
    if seconds < EARLIEST:
        return "lies before the year 2000 (unix seconds expected)"
    if in_the_future(seconds, now=now):
        return "lies more than a day in the future (milliseconds?)"
    return ""
