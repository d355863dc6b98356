"""The DORA definitions (watcher.domain.dora) over scripted and random rollout sequences."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.builders import API, SETTINGS, Run, identity, started
from watcher.config import ExpositionSettings, RetentionSettings, Settings
from watcher.domain import dora, labels
from watcher.domain.events import DomainEvent, RolloutFinished, RolloutRevised, RolloutStarted
from watcher.domain.machine import apply
from watcher.domain.model import (
    LEAD_TIME_BUCKETS,
    RECOVERY_BUCKETS,
    DeploymentKey,
    Dora,
    Histogram,
    Instance,
    Origin,
    State,
    Status,
)
from watcher.domain.observations import InstanceExited, InstanceGone, Resync, RolloutReported
from watcher.domain.settings import LabelSettings
from watcher.exposition.families import DORA_BOUNDS, DeploymentCollector
from watcher.persistence.codec import decode, encode
from watcher.sources.api.reports import Invalid, parse_report

DAY = 86400.0
T0 = 1_714_570_000.0


def report(version: str, status: str, at: float, *, commit_time: float | None = None, hotfix: bool = False,
           started_at: float | None = None, key: DeploymentKey = API) -> RolloutReported:  # fmt: skip
    """A report of ``version`` (commit ``c-<version>``) from deploy tooling."""
    return RolloutReported(
        at=at, key=key, version=version, commit=f"c-{version}", status=Status[status.upper()],
        started_at=started_at, commit_time=commit_time, hotfix=hotfix,
    )  # fmt: skip


def deploy(run: Run, version: str, at: float, status: str = "success", **extra: Any) -> Run:
    """A rollout of ``version`` announced at ``at`` and finished a minute later."""
    return run(report(version, "in_progress", at, **extra), report(version, status, at + 60, **extra))


def figures(run: Run, key: DeploymentKey = API) -> Dora:
    return run.d(key).dora


# -- the definitions, one case each


def test_a_success_counts_one_rollout_and_its_lead_time() -> None:
    """A success counts under outcome success, with success time − commit time as its lead time."""
    run = deploy(Run(), "1.0.0", T0, commit_time=T0 - 3600)
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures, f.rework) == (1, 0, 0, 0)
    assert f.lead_times.count == 1 and f.lead_times.total == 3660
    assert f.recoveries.count == 0


def test_rollback_after_success_counts_one_change_failure() -> None:
    """A success rolled back is one change failure; the rollback's success is the recovery."""
    run = deploy(deploy(Run(), "1.0.0", T0), "2.0.0", T0 + 1000)
    run = deploy(run, "1.0.0", T0 + 5000)
    assert any(isinstance(e, RolloutStarted) and e.rollback for e in run.events)
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures) == (3, 0, 1)
    assert f.recoveries.count == 1 and f.recoveries.total == 60  # rollback began at 5000, success at 5060
    assert f.failing_since is None


def test_failed_then_rolled_back_counts_once() -> None:
    """A failed rollout that is then rolled back is one change failure, not two."""
    run = deploy(deploy(Run(), "1.0.0", T0), "2.0.0", T0 + 1000, "failed")
    run = deploy(run, "1.0.0", T0 + 2000)
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures) == (2, 1, 1)
    assert f.recoveries.count == 1 and f.recoveries.total == 2060 - 1060


def test_a_revised_verdict_is_not_counted_twice() -> None:
    """Success, corrected to failed, to success, to failed: one rollout (a success), one change failure,
    recovered once (a change failure is recovered from at most once)."""
    run = deploy(Run(), "1.0.0", T0)
    for n, status in enumerate(("failed", "success", "failed")):
        run(report("1.0.0", status, T0 + 100 + n))
    assert sum(isinstance(e, RolloutRevised) for e in run.events) == 3
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures) == (1, 0, 1)
    assert f.recoveries.count == 1 and f.recoveries.total == 1 and f.failing_since is None


def test_recovery_is_measured_from_the_first_failure() -> None:
    """Two failures in a row, then a success: one recovery, from the first failure."""
    run = deploy(Run(), "1.0.0", T0)
    run = deploy(run, "2.0.0", T0 + 1000, "failed")
    run = deploy(run, "3.0.0", T0 + 2000, "failed")
    run = deploy(run, "4.0.0", T0 + 3000)
    f = figures(run)
    assert f.change_failures == 2
    assert f.recoveries.count == 1 and f.recoveries.total == (T0 + 3060) - (T0 + 1060)


def test_lead_time_once_per_commit() -> None:
    """A redeploy of the same commit and a rollback to a counted commit add no lead time."""
    run = deploy(Run(), "1.0.0", T0, commit_time=T0 - 100)
    run = deploy(run, "2.0.0", T0 + 1000, commit_time=T0 + 900)
    run = deploy(run, "1.0.0", T0 + 2000, commit_time=T0 - 100)  # a rollback
    run = deploy(run, "1.0.0", T0 + 3000, commit_time=T0 - 100)  # a redeploy
    f = figures(run)
    assert f.successes == 4
    assert f.lead_times.count == 2 and f.lead_times.total == 160 + 160
    assert f.commits == ("c-2.0.0", "c-1.0.0")


def test_remembered_commits_are_bounded() -> None:
    """Only the last REMEMBERED_COMMITS commits are remembered: a rollback beyond them counts its lead time again."""
    run = Run()
    for n in range(dora.REMEMBERED_COMMITS + 1):
        run = deploy(run, f"1.{n}.0", T0 + 1000 * n, commit_time=T0 - 100)
    assert len(figures(run).commits) == dora.REMEMBERED_COMMITS and "c-1.0.0" not in figures(run).commits
    run = deploy(run, "1.0.0", T0 + 100_000, commit_time=T0 - 100)
    assert figures(run).lead_times.count == dora.REMEMBERED_COMMITS + 2


def test_no_commit_time_no_lead_time() -> None:
    """A rollout without a commit time counts, with no lead time."""
    f = figures(deploy(Run(), "1.0.0", T0))
    assert f.successes == 1 and f.lead_times.count == 0


def test_a_hotfix_is_rework_and_makes_the_change_before_it_a_failure() -> None:
    """A hotfix after a success: rework 1, and the success before it one change failure."""
    run = deploy(Run(), "1.0.0", T0)
    run = deploy(run, "1.0.1", T0 + 1000, hotfix=True)
    f = figures(run)
    assert (f.successes, f.change_failures, f.rework) == (2, 1, 1)
    assert f.recoveries.count == 1 and f.recoveries.total == 60


def test_a_hotfix_after_a_failure_counts_the_failure_once() -> None:
    """A hotfix of a failed rollout adds rework but no second change failure."""
    run = deploy(deploy(Run(), "1.0.0", T0), "1.1.0", T0 + 1000, "failed")
    run = deploy(run, "1.1.1", T0 + 2000, hotfix=True)
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures, f.rework) == (2, 1, 1, 1)


def test_containers_count_like_reports() -> None:
    """Containers with the commit time and hotfix labels: a success and a crash-looping hotfix."""
    run = Run()
    run(started("a", "1.0.0", T0, commit_time=T0 - 600))
    run.tick(T0 + 11)  # stable time 10 s
    assert figures(run).successes == 1 and figures(run).lead_times.total == 611
    run(started("b", "1.0.1", T0 + 100, hotfix=True), InstanceExited(T0 + 101, "b", 1))
    f = figures(run)
    assert (f.successes, f.failures, f.change_failures, f.rework) == (1, 1, 2, 1)  # 1.0.0 needed a fix, 1.0.1 failed


def test_rollouts_found_by_a_resync_do_not_count() -> None:
    """A container already running when the watcher starts began at an unknown time: not counted."""
    instance = Instance(id="a", identity=identity("1.0.0", at=T0 - DAY, commit_time=T0 - 2 * DAY), running=True,
                        running_since=T0 - DAY)  # fmt: skip
    run = Run()(Resync(T0, Origin.CONTAINER, (instance,)))
    run.tick(T0 + 30)
    assert run.status is Status.SUCCESS
    assert figures(run) == Dora()


def test_a_new_version_found_by_a_resync_counts_without_times() -> None:
    """A known deployment's new version, deployed while the watcher was away: a rollout, no lead time."""
    run = Run()(started("a", "1.0.0", T0, commit_time=T0 - 600))
    run.tick(T0 + 11)
    ident = identity("2.0.0", at=T0 + 100, commit_time=T0 + 50)
    later = Instance(id="b", identity=ident, running=True, running_since=T0 + 100)
    run(Resync(T0 + 1000, Origin.CONTAINER, (later,)))
    run.tick(T0 + 1020)
    assert run.d().rollout.revision == 2 and run.status is Status.SUCCESS
    f = figures(run)
    assert f.successes == 2 and f.lead_times.count == 1  # only 1.0.0's, seen as it happened


def test_dropped_and_back_continues_its_counters() -> None:
    """A deployment dropped by retention keeps its figures for retention.dora_seconds: back, it continues."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(gone_seconds=60, dora_seconds=10 * DAY))
    run = Run(settings)
    run(started("a", "1.0.0", T0, commit_time=T0 - 600))
    run.tick(T0 + 11)
    before = figures(run)
    run(InstanceGone(T0 + 20, "a"))
    run.tick(T0 + 100)
    assert API not in run.state.deployments and run.state.retired[API].dora == before
    run(started("b", "2.0.0", T0 + DAY, commit_time=T0 + DAY - 60))
    run.tick(T0 + DAY + 11)
    after = figures(run)
    assert API not in run.state.retired
    assert (after.successes, after.lead_times.count) == (2, 2)
    assert run.d().rollout.revision == 1  # revisions start again; the figures do not


def test_retired_figures_are_forgotten_after_dora_seconds() -> None:
    """Past retention.dora_seconds a dropped deployment's figures go, and one coming back starts at zero."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(gone_seconds=60, dora_seconds=DAY))
    run = Run(settings)
    run(started("a", "1.0.0", T0))
    run.tick(T0 + 11)
    run(InstanceGone(T0 + 20, "a"))
    run.tick(T0 + 100)
    assert API in run.state.retired
    run.tick(T0 + 100 + DAY)
    assert not run.state.retired
    run(started("b", "2.0.0", T0 + 2 * DAY))
    assert figures(run) == Dora()


def test_retired_figures_are_capped_by_max_deployments() -> None:
    """At most retention.max_deployments dropped deployments keep their figures: the oldest go first."""
    settings = dataclasses.replace(SETTINGS, retention=RetentionSettings(gone_seconds=0, max_deployments=2))
    run = Run(settings)
    for n in range(3):
        at = T0 + 100 * n
        run(started(f"c{n}", "1.0.0", at, key=DeploymentKey(f"d{n}", "production")))
        run.tick(at + 11)
        run(InstanceGone(at + 12, f"c{n}"))
        run.tick(at + 13)
    assert sorted(key.name for key in run.state.retired) == ["d1", "d2"]  # a mapping: no order


# -- restarts, and the state file


def test_restart_keeps_every_figure() -> None:
    """Encoded and decoded, the figures (failing_since, commits counted, revision counted) are the same."""
    run = deploy(Run(), "1.0.0", T0, commit_time=T0 - 100)
    run = deploy(run, "2.0.0", T0 + 1000, "failed", hotfix=True)
    state = decode(encode(run.state))
    assert state == run.state
    assert state.deployments[API].dora.failing_since == T0 + 1000  # the hotfix began: 1.0.0 needed one


def test_exposition_shows_the_figures() -> None:
    """The five families show a deployment's figures, with both outcomes present from the start."""
    run = deploy(Run(), "1.0.0", T0, commit_time=T0 - 100)
    run = deploy(run, "0.9.0", T0 + 1000)  # a rollback
    registry = CollectorRegistry()
    per_deployment = dataclasses.replace(SETTINGS, exposition=ExpositionSettings(dora_histograms="deployment"))
    registry.register(DeploymentCollector(snapshot=lambda: run.state, settings=per_deployment))
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("deployment", "environment")))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.labels.get("deployment") == "api"
    }
    assert samples[("deployment_rollouts_total", (("outcome", "success"),))] == 2
    assert samples[("deployment_rollouts_total", (("outcome", "failed"),))] == 0
    assert samples[("deployment_change_failures_total", ())] == 1
    assert samples[("deployment_rework_total", ())] == 0
    assert samples[("deployment_lead_time_seconds_count", ())] == 1
    assert samples[("deployment_lead_time_seconds_bucket", (("le", "3600.0"),))] == 1  # the DORA bands' bounds
    assert samples[("deployment_lead_time_seconds_bucket", (("le", "2.592e+06"),))] == 1
    assert samples[("deployment_recovery_seconds_count", ())] == 1
    assert samples[("deployment_recovery_seconds_sum", ())] == 60


def test_dora_histograms_per_environment_by_default() -> None:
    """By default, lead times and recoveries are one histogram per environment: its deployments' summed."""
    run = deploy(Run(), "1.0.0", T0, commit_time=T0 - 100)
    run = deploy(run, "0.9.0", T0 + 1000)
    run = deploy(run, "1.0.0", T0 + 2000, key=DeploymentKey("web", "production"), commit_time=T0 + 2000 - 7200)
    registry = CollectorRegistry()
    registry.register(DeploymentCollector(snapshot=lambda: run.state, settings=SETTINGS))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if s.name.startswith(("deployment_lead_time", "deployment_recovery"))
    }
    production = (("environment", "production"),)
    assert samples[("deployment_lead_time_seconds_count", production)] == 2
    assert samples[("deployment_lead_time_seconds_bucket", (*production, ("le", "3600.0")))] == 1
    assert samples[("deployment_lead_time_seconds_bucket", (*production, ("le", "86400.0")))] == 2
    assert samples[("deployment_lead_time_seconds_sum", production)] == 160 + 7260
    assert samples[("deployment_recovery_seconds_count", production)] == 1
    assert len(samples) == 2 * (len(DORA_BOUNDS) + 3)  # one environment, no deployment label


# -- random sequences, against the definitions read off the event stream


@dataclass
class Oracle:
    """The figures computed from the events alone, as docs/dora.md defines them."""

    commit_times: dict[str, float | None]
    hotfixes: dict[str, bool]
    successes: int = 0
    failures: int = 0
    rework: int = 0
    failed: set[int] = field(default_factory=set)
    status: dict[int, Status] = field(default_factory=dict)
    version: dict[int, str] = field(default_factory=dict)
    failing_since: float | None = None
    recoveries: list[float] = field(default_factory=list)
    lead_times: list[float] = field(default_factory=list)
    counted: set[str] = field(default_factory=set)

    def feed(self, event: DomainEvent) -> None:
        match event:
            case RolloutStarted(revision=r, version=v, at=at, rollback=rollback):
                previous = r - 1
                if self.status.get(previous) is Status.SUCCESS and (rollback or self.hotfixes[v]):
                    self.fail(previous, at)
                self.version[r] = v
            case RolloutFinished(revision=r, status=status, at=at):
                self.status[r] = status
                self.rework += self.hotfixes[self.version[r]]
                if status is Status.SUCCESS:
                    self.successes += 1
                    self.succeed(r, at)
                else:
                    self.failures += 1
                    self.fail(r, at)
            case RolloutRevised(revision=r, after=after, at=at):
                self.status[r] = after
                if after is Status.FAILED:
                    self.fail(r, at)
                else:
                    self.succeed(r, at)

    def fail(self, revision: int, at: float) -> None:
        if revision not in self.failed:
            self.failed.add(revision)
            self.failing_since = at if self.failing_since is None else self.failing_since

    def succeed(self, revision: int, at: float) -> None:
        if self.failing_since is not None:
            self.recoveries.append(at - self.failing_since)
            self.failing_since = None
        version = self.version[revision]
        commit_time = self.commit_times[version]
        if commit_time is not None and f"c-{version}" not in self.counted:
            self.counted.add(f"c-{version}")
            self.lead_times.append(at - commit_time)


VERSION_POOL = ("1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.0.1")
STEPS = st.lists(
    st.tuples(
        st.sampled_from(("deploy", "announce", "finish", "correct", "restart")),
        st.sampled_from(VERSION_POOL),
        st.sampled_from(("success", "failed")),
        st.floats(1, 3 * DAY),
    ),
    max_size=25,
)


@given(
    steps=STEPS,
    commit_times=st.fixed_dictionaries({v: st.one_of(st.none(), st.floats(0, 30 * DAY)) for v in VERSION_POOL}),
    hotfixes=st.fixed_dictionaries({v: st.booleans() for v in VERSION_POOL}),
)
def test_figures_follow_the_definitions(
    steps: list[tuple[str, str, str, float]], commit_times: dict[str, float | None], hotfixes: dict[str, bool]
) -> None:
    """Over random reports (deploys, corrections, restarts through the state file), the figures are
    those read off the events, and no counter ever decreases."""
    absolute = {v: None if ago is None else T0 - ago for v, ago in commit_times.items()}
    state, at = State(), T0
    events: list[DomainEvent] = []
    for kind, version, status, advance in steps:
        at += advance
        current = state.deployments[API].rollout if API in state.deployments else None
        if kind == "restart":
            observations = []
            state = decode(encode(state))
        elif kind == "announce":
            observations = [report(version, "in_progress", at)]
        elif kind in ("finish", "correct") and current is not None:
            observations = [report(current.version, status, at)]
        else:
            observations = [report(version, status, at, started_at=at - 1)]
        for observation in observations:
            observation = dataclasses.replace(observation, commit_time=absolute[observation.version],
                                              hotfix=hotfixes[observation.version])  # fmt: skip
            before = state.deployments[API].dora if API in state.deployments else Dora()
            step = apply(state, observation, now=at, settings=SETTINGS)
            state, events = step.state, [*events, *step.events]
            check_grew(before, state.deployments[API].dora)
    if API not in state.deployments:
        return
    oracle = Oracle(absolute, hotfixes)
    for event in events:
        oracle.feed(event)
    f = state.deployments[API].dora
    assert (f.successes, f.failures, f.change_failures, f.rework) == (
        oracle.successes, oracle.failures, len(oracle.failed), oracle.rework,
    )  # fmt: skip
    assert f.failing_since == oracle.failing_since
    assert f.recoveries == histogram(RECOVERY_BUCKETS, oracle.recoveries)
    assert f.lead_times == histogram(LEAD_TIME_BUCKETS, oracle.lead_times)
    assert f.change_failures <= f.successes + f.failures and f.rework <= f.successes + f.failures


def histogram(bounds: tuple[float, ...], values: list[float]) -> Histogram:
    result = Histogram.empty(bounds)
    for value in values:
        result = result.observe(max(0.0, value))
    return result


def check_grew(before: Dora, after: Dora) -> None:
    """Counts never go down."""
    for name in ("successes", "failures", "change_failures", "rework", "failed_revision"):
        assert getattr(after, name) >= getattr(before, name), name
    for old, new in ((before.lead_times, after.lead_times), (before.recoveries, after.recoveries)):
        assert all(n >= o for n, o in zip(new.counts, old.counts, strict=True)) and new.total >= old.total


def test_record_ignores_other_events() -> None:
    """Events that are not about a rollout's verdict leave the figures alone."""
    from watcher.domain.events import RolloutSuperseded

    figures_before = Dora(successes=3)
    superseded = RolloutSuperseded(key=API, at=T0, revision=1, version="1.0.0")
    rollout = Run()(report("1.0.0", "in_progress", T0)).d().rollout
    assert dora.record(figures_before, superseded, rollout=rollout) is figures_before


# -- the commit time and change type, from labels and the API


def parse(extra: dict[str, str], *, settings: LabelSettings | None = None) -> labels.Parsed:
    return labels.parse(
        {labels.NAME: "api", **extra}, image="shop/api:1.0.0", image_id="sha256:abc", created_at=T0, now=T0,
        settings=settings or LabelSettings(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (str(int(T0 - 3600)), T0 - 3600),
        (f" {T0 - 0.5} ", T0 - 0.5),
        ("2024-05-01T12:00:00Z", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC).timestamp()),
        ("2024-05-01T14:00:00+02:00", datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC).timestamp()),
    ],
)
def test_commit_time_label(raw: str, expected: float) -> None:
    """deployment.commit_time in unix seconds or RFC 3339 with a zone."""
    parsed = parse({labels.COMMIT_TIME: raw})
    assert parsed.identity is not None and parsed.identity.commit_time == expected
    assert parsed.problems == ()


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (str(T0 * 1000), "in the future"),
        ("12", "before the year 2000"),
        ("-5", "not unix seconds"),
        ("yesterday", "not unix seconds"),
        ("2024-05-01T12:00:00", "not unix seconds"),  # no zone
        ("nan", "not unix seconds"),
    ],
)
def test_bad_commit_time_is_ignored_with_a_problem(raw: str, needle: str) -> None:
    """Future, absurd or unreadable commit times are refused and reported against the label."""
    parsed = parse({labels.COMMIT_TIME: raw})
    assert parsed.identity is not None and parsed.identity.commit_time is None
    assert [p.label for p in parsed.problems] == [labels.COMMIT_TIME]
    assert needle in parsed.problems[0].message


def test_image_created_only_when_enabled() -> None:
    """org.opencontainers.image.created is the commit time only with labels.image_created_commit_time."""
    created = {labels.OCI_CREATED: "2024-05-01T12:00:00Z"}
    off = parse(created)
    on = parse(created, settings=LabelSettings(image_created_commit_time=True))
    both = parse({**created, labels.COMMIT_TIME: "1714560000"}, settings=LabelSettings(image_created_commit_time=True))
    assert off.identity is not None and off.identity.commit_time is None
    assert on.identity is not None and on.identity.commit_time == 1714564800.0
    assert both.identity is not None and both.identity.commit_time == 1714560000.0
    bad = parse({labels.OCI_CREATED: "soon"}, settings=LabelSettings(image_created_commit_time=True))
    assert [p.label for p in bad.problems] == [labels.OCI_CREATED]


@pytest.mark.parametrize(("raw", "hotfix", "problems"), [("hotfix", True, 0), (" HotFix ", True, 0),
                                                         ("change", False, 0), ("bugfix", False, 1)])  # fmt: skip
def test_change_type_label(raw: str, hotfix: bool, problems: int) -> None:
    """deployment.change_type=hotfix marks a hotfix; an unknown type is reported and ignored."""
    parsed = parse({labels.CHANGE_TYPE: raw})
    assert parsed.identity is not None and parsed.identity.hotfix is hotfix
    assert len(parsed.problems) == problems


def test_api_commit_time_and_change_type() -> None:
    """The CI/CD API reads commit_time like started_at and change_type as change or hotfix."""
    body = {"deployment": "api", "version": "1.0.0", "status": "success", "commit_time": "2024-05-01T12:00:00Z",
            "change_type": "hotfix"}  # fmt: skip
    parsed = parse_report(body, at=T0, settings=Settings())
    assert parsed.commit_time == 1714564800.0 and parsed.hotfix is True
    assert parse_report({**body, "change_type": "change"}, at=T0, settings=Settings()).hotfix is False
    for field_name, value in (("commit_time", T0 * 1000), ("commit_time", 5), ("change_type", "bugfix"),
                              ("change_type", 1)):  # fmt: skip
        with pytest.raises(Invalid) as refused:
            parse_report({**body, field_name: value}, at=T0, settings=Settings())
        assert refused.value.field == field_name


def test_a_report_adds_the_commit_time_its_containers_lacked() -> None:
    """Deploy tooling reporting a rollout its containers started gives it the commit time and hotfix mark."""
    run = Run()(started("a", "1.0.0", T0))
    run(report("1.0.0", "success", T0 + 5, commit_time=T0 - 100, hotfix=True))
    rollout = run.d().rollout
    assert (rollout.commit_time, rollout.hotfix) == (T0 - 100, True)
    assert figures(run).lead_times.total == 105
