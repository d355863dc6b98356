"""Times written down by others (a label, a CI/CD report): which can be the unix time of a deploy.

Two rules. A time that cannot be a deploy time at all (before 2000, more than a day ahead: a
unit mistake) is ``implausible``: refused where it is read (the API answers 400, a label is
replaced by the container's creation time, with a warning). A plausible time that lies after the
moment the watcher observed it, a finish before its rollout began, or a commit after its deploy
began is clock skew (a CI runner's or a laptop's clock ahead): ``refused`` by the state machine,
which uses the documented fallback and says so (``TimeRefused``: a warning and
``deployment_watcher_clock_skew_total{source}``). Refused, never clamped: a time clamped to the
moment would make a 0 s duration or lead time look true.

Such a time only says when a rollout started, for its duration. The progress deadline never
counts from it: it counts from when the watcher learned of the rollout, so a time from a CI job
that ran long before cannot fail a rollout at once.
"""

from __future__ import annotations

from watcher.domain.events import TimeRefused
from watcher.domain.model import DeploymentKey
from watcher.domain.txn import Txn

LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: no time the watcher keeps lies beyond (nor before 0)
EARLIEST = 946684800.0  # 2000-01-01: an earlier "time" in a report is a mistake (a duration, a zero)
# Beyond a day ahead of our clock is a unit mistake (milliseconds?), not clock skew.
FUTURE_SLACK_SECONDS = 86400.0

# The times the skew rule refuses (the label values of deployment_watcher_clock_skew_total).
SOURCES = ("started_at", "finished_at", "commit_time", "deployment.timestamp")
OBSERVED = "the moment the watcher observed it"
DEPLOY_BEGAN = "its deploy began"
ROLLOUT_BEGAN = "its rollout began"
NO_LEAD_TIME = "no lead time"


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


def refused(txn: Txn, key: DeploymentKey, source: str, value: float, *, latest: float, what: str, instead: str) -> bool:
    """Whether ``value`` (the time ``source``) lies after ``latest`` (``what``): clock skew, refused and told."""
    if value <= latest:
        return False
    txn.emit(TimeRefused(key=key, at=txn.now, source=source, value=value, bound=latest, what=what, instead=instead))
    return True


def commit_time(txn: Txn, key: DeploymentKey, value: float | None, *, started_at: float) -> float | None:
    """The commit time ``value`` of a deploy begun at ``started_at``; None when it lies after that
    (a lead time from skew, refused and told) or there is none."""
    if value is None or refused(
        txn, key, "commit_time", value, latest=started_at, what=DEPLOY_BEGAN, instead=NO_LEAD_TIME
    ):  # fmt: skip
        return None
    return value


def refused_finish(txn: Txn, key: DeploymentKey, value: float, *, started_at: float, instead: str) -> bool:
    """Whether the finish ``value`` lies before its rollout's start ``started_at``: clock skew, refused and told."""
    if value >= started_at:
        return False
    txn.emit(
        TimeRefused(
            key=key, at=txn.now, source="finished_at", value=value, bound=started_at, what=ROLLOUT_BEGAN,
            instead=instead,
        )
    )  # fmt: skip
    return True
