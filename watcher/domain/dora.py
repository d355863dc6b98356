"""The DORA definitions: a deployment's figures, folded from the machine's rollout events.

``record(dora, event, rollout=…)`` is called by ``rollouts`` with every rollout event, the
current rollout beside it (its commit time and hotfix mark are not in the event). Definitions
(docs/dora.md says why, and how they differ from Four Keys and DevLake):

- a rollout counts once, at its first verdict (``RolloutFinished``), as a success or a failure;
- a change failure is a rollout that failed, was revised to failed, or succeeded and was then
  rolled back or followed by a hotfix; each revision at most once;
- lead time is success time − commit time, once per commit (a redeploy or a rollback to a
  commit already counted adds nothing);
- recovery runs from the first change failure to the next successful rollout;
- rework is a hotfix rollout, counted at its first verdict.

Rollouts the watcher did not see begin count only when they are news (``_counted``): a new version
of a known deployment found by a resync was deployed while the watcher was away, but a
deployment found running at its first start was deployed at some time nobody knows. Times that
are not known (a verdict found by a resync, a rollout whose start was not seen) are not measured.
"""

from __future__ import annotations

import dataclasses

from watcher.domain.events import DomainEvent, RolloutFinished, RolloutRevised, RolloutStarted
from watcher.domain.model import Dora, Judge, Rollout, Status

# Commits whose lead time is counted, remembered per deployment: a rollback rarely reaches further
# back, and 20 commit ids of up to 128 characters stay small even for 5,000 deployments.
REMEMBERED_COMMITS = 20


def record(dora: Dora, event: DomainEvent, *, rollout: Rollout, previous: Rollout | None = None,
           timed: bool = True) -> Dora:  # fmt: skip
    """``dora`` after ``event`` about ``rollout`` (the one it names); ``previous``: the rollout a
    ``RolloutStarted`` replaces; ``timed``: the event's time is when it happened (not a resync's)."""
    match event:
        case RolloutStarted(rollback=rollback, at=at):
            if previous is None or previous.status is not Status.SUCCESS or not _counted(previous):
                return dora
            if rollback or rollout.hotfix:  # the change deployed before needed intervention
                return _change_failure(dora, previous.revision, at=at)
            return dora
        case RolloutFinished(status=status, at=at):
            if not _counted(rollout):
                return dora
            timed = timed and _seen(rollout)
            if status is Status.SUCCESS:
                counted = dataclasses.replace(dora, successes=dora.successes + 1, rework=dora.rework + rollout.hotfix)
                return _succeeded(counted, rollout, at=at, timed=timed)
            counted = dataclasses.replace(dora, failures=dora.failures + 1, rework=dora.rework + rollout.hotfix)
            return _change_failure(counted, rollout.revision, at=at)
        case RolloutRevised(after=after, at=at):
            if not _counted(rollout):
                return dora
            timed = timed and _seen(rollout)
            if after is Status.FAILED:
                return _change_failure(dora, rollout.revision, at=at)
            return _succeeded(dora, rollout, at=at, timed=timed)
    return dora


def _seen(rollout: Rollout) -> bool:
    """Whether the rollout happened while the watcher looked: seen as it began, or reported by deploy
    tooling (a report is news); not one found by a resync, which began at a time we do not know."""
    return rollout.witnessed or rollout.judge is not Judge.CONTAINERS


def _counted(rollout: Rollout) -> bool:
    """Whether the rollout is a deployment to count: seen, or a new revision of a deployment known before."""
    return _seen(rollout) or rollout.revision > 1


def revived(dora: Dora) -> Dora:
    """The figures of a dropped deployment that comes back: its revisions start again from 1."""
    return dataclasses.replace(dora, failed_revision=0)


def _change_failure(dora: Dora, revision: int, *, at: float) -> Dora:
    if revision <= dora.failed_revision:
        return dora  # already counted
    return dataclasses.replace(
        dora,
        change_failures=dora.change_failures + 1,
        failed_revision=revision,
        failing_since=at if dora.failing_since is None else dora.failing_since,
    )


def _succeeded(dora: Dora, rollout: Rollout, *, at: float, timed: bool) -> Dora:
    """A success: recovered from a change failure, and the lead time of a commit not counted yet."""
    recoveries, lead_times, commits = dora.recoveries, dora.lead_times, dora.commits
    if dora.failing_since is not None and timed:
        recoveries = recoveries.observe(max(0.0, at - dora.failing_since))
    commit = rollout.commit or rollout.version
    # The state machine refuses a commit time after its deploy began (domain.times); a success before
    # the commit (a clock stepped back) has no lead time either, rather than 0 s, which looks elite.
    if rollout.commit_time is not None and rollout.commit_time < at and timed and commit not in commits:
        lead_times = lead_times.observe(at - rollout.commit_time)
        commits = (commit, *commits)[:REMEMBERED_COMMITS]
    return dataclasses.replace(dora, recoveries=recoveries, lead_times=lead_times, commits=commits, failing_since=None)
