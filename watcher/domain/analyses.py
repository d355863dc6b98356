"""The analysis of rollouts in the state machine: measurements applied, the rollback they may ask for.

Its start (a rollout's first success), its end at the window's (``rollouts.conclude``) and an
analysis ended by a failure of its rollout are in ``rollouts``, where verdicts are given; the pure
judgement is ``analysis``'s.
"""

from __future__ import annotations

import dataclasses
import math

from watcher.domain import rollouts
from watcher.domain.analysis import Mode, Outcome, Result, failed, record
from watcher.domain.events import AnalysisMeasured
from watcher.domain.model import Status
from watcher.domain.observations import AnalysisMeasured as Measurement
from watcher.domain.observations import AnalysisObservation, RollbackAsked
from watcher.domain.txn import Txn


def observed(txn: Txn, observation: AnalysisObservation) -> None:
    """What the analysis source measured, or what the orchestrator's source asked for."""
    if isinstance(observation, RollbackAsked):
        rollback_asked(txn, observation)
    else:
        measured(txn, observation)


def measured(txn: Txn, measurement: Measurement) -> None:
    """A measurement of a check; one of another rollout (stale), of an analysis that ended, or of a
    check it does not have, is ignored."""
    deployment = txn.deployments.get(measurement.key)
    if deployment is None or deployment.rollout.revision != measurement.revision:
        return
    rollout, under = deployment.rollout, deployment.rollout.analysis
    if under is None or under.outcome is not Outcome.RUNNING:
        return
    check = next((m for m in under.checks if m.check.name == measurement.check), None)
    if check is None or (measurement.baseline and check.baseline_taken):
        return
    if not measurement.baseline and under.measuring_since is None:
        return
    after, result, figures = record(
        under, measurement.check, measurement.value, error=measurement.error, baseline=measurement.baseline,
        at=measurement.at,
    )  # fmt: skip
    updated = after.checks[under.checks.index(check)]
    txn.emit(
        AnalysisMeasured(
            key=deployment.key, at=measurement.at, revision=rollout.revision, version=rollout.version,
            check=measurement.check, result=result or _baseline_result(measurement),
            value=updated.baseline if result is None else measurement.value, baseline=updated.baseline,
            of_baseline=result is None, reason=measurement.error or figures,
        )
    )  # fmt: skip
    deployment = dataclasses.replace(deployment, rollout=dataclasses.replace(rollout, analysis=after))
    if failed(after, result, failure_limit=txn.settings.analysis.failure_limit):
        reason = f"analysis {measurement.check}: {figures}"
        deployment = rollouts.end_analysis(txn, deployment, Outcome.FAILED, reason)
        if after.mode is Mode.GATE and rollout.status is Status.IN_PROGRESS:
            # A change failure for DORA, as any failed rollout.
            deployment = rollouts.change_status(txn, deployment, Status.FAILED, reason, at=txn.now, by=rollout.judge)
    txn.put(deployment)


def _baseline_result(measurement: Measurement) -> Result:
    if measurement.error:
        return Result.ERROR
    return Result.NODATA if measurement.value is None or math.isnan(measurement.value) else Result.PASS


def rollback_asked(txn: Txn, asked: RollbackAsked) -> None:
    """The orchestrator was asked to roll back the rollout whose analysis failed: asked once, even
    when the request failed (the source logs why), never again for this rollout."""
    deployment = txn.deployments.get(asked.key)
    if deployment is None or deployment.rollout.revision != asked.revision:
        return
    under = deployment.rollout.analysis
    if under is None or under.rollback_done:
        return
    reason = under.reason + (f"; the rollback could not be asked: {asked.error}" if asked.error else "")
    done = dataclasses.replace(under, rollback_done=True, reason=reason)
    txn.put(dataclasses.replace(deployment, rollout=dataclasses.replace(deployment.rollout, analysis=done)))
