"""Bad input, systematically: hypothesis drives random observation sequences, label values
and Docker JSON through the pure modules and checks what must always hold."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import examples
from tests.unit.builders import Run, replay, started
from watcher.config import LabelSettings, RetentionSettings, RolloutSettings, Settings
from watcher.domain import labels
from watcher.domain.events import DomainEvent
from watcher.domain.model import (
    DURATION_BUCKETS,
    Deployment,
    Dora,
    Health,
    Identity,
    Instance,
    Origin,
    State,
    Status,
    Usage,
)
from watcher.domain.observations import (
    InstanceChange,
    InstanceExited,
    InstanceGone,
    InstanceHealth,
    InstanceOOMKilled,
    InstanceSeen,
    InstanceStarted,
    InstanceStopRequested,
    Observation,
    Resync,
    Tick,
    UsageSampled,
)
from watcher.exposition.families import DeploymentCollector
from watcher.persistence import codec
from watcher.runtime.core import Core
from watcher.selfmetrics import SelfMetrics
from watcher.sources import jsonfields
from watcher.sources.docker import causes as docker_causes
from watcher.sources.docker.causes import Inspect

STATE_MACHINE_EXAMPLES = examples(75)  # an example is 40 steps

# Small limits, so random sequences reach the cap, the history bound, deadlines and retention.
STATE_SETTINGS = Settings(
    labels=LabelSettings(max_value_length=16),
    rollout=RolloutSettings(stable_seconds=10, progress_deadline_seconds=120, restart_limit=3),
    retention=RetentionSettings(gone_seconds=300, history_versions=3, max_deployments=4),
)
START = 1_714_570_000.0

# -- text that labels are made of

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)  # possible in JSON, not encodable as UTF-8
SPECIALS = st.sampled_from("\n\r\t\x00\x1b\x7f\x85\u2028\u2029\"'\\`{}=,# ")
CHARS = st.one_of(st.characters(), SURROGATES, SPECIALS)
NUMBERS = (
    "nan", "inf", "-inf", "-1", "-0", "0", "1.5", "1e400", "1e-400", "0x10", "1_000", " 12 ", "١٢٣", "１２",
    "+3", "--1", "1e9", "1714570000", "1714570000000", "9" * 400, "", " ",
)  # fmt: skip
odd_text = st.one_of(
    st.text(CHARS, max_size=40),
    st.builds(lambda chunk, n: chunk * n, st.text(CHARS, min_size=1, max_size=3), st.integers(50, 3000)),
    st.sampled_from(NUMBERS),
)

# -- labels of containers in the state machine: a few names, so deployments collide

NAMES = ("api", "web", " api ", 'q"uo\\te', "ünï", "x" * 40, "line\nbreak", "\x00", "", "\ud800", "a\u2028b")
ENVIRONMENTS = ("production", "staging", "", "prod\tuction", "é" * 30)
VERSIONS = (
    "1.0.0", "1.9.0", "1.10.0", "v2.0.0", "2.0.0", "3.0.0-beta", "3.0.0", "2024-05-01", "20240501", "latest",
    "deadbeef", "0a1b2c3d4e5f", "main", "ü-1", "", "9" * 200, "1.0.0\n", "1.0.0 ",
)  # fmt: skip
IMAGES = ("shop/api:1.0.0", "shop/api:latest", "reg:5000/api", "", "api@sha256:abc", "shop/api:v\u00e9")


def optional(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def deployment_labels(draw: st.DrawFn) -> dict[str, str]:
    """The deployment.* labels of one container, good and bad values mixed."""
    drawn = {
        # Mostly two names in one environment: deployments get several containers.
        labels.NAME: draw(st.one_of(st.sampled_from(NAMES[:2]), st.sampled_from(NAMES[:2]), st.sampled_from(NAMES))),
        labels.ENVIRONMENT: draw(st.one_of(st.none(), st.none(), st.sampled_from(ENVIRONMENTS))),
        labels.VERSION: draw(optional(st.one_of(st.sampled_from(VERSIONS), odd_text))),
        labels.COMMIT: draw(optional(st.one_of(st.just("abc123"), odd_text))),
        labels.TIMESTAMP: draw(optional(st.one_of(st.sampled_from(NUMBERS), st.just(str(START - 30))))),
        labels.STATUS: draw(optional(st.sampled_from(("success", "failed", "in-progress", "IN_PROGRESS", "meh")))),
        labels.STABLE_SECONDS: draw(optional(st.sampled_from(NUMBERS))),
        labels.PROGRESS_DEADLINE: draw(optional(st.sampled_from(NUMBERS))),
        labels.COMMIT_TIME: draw(optional(st.one_of(st.sampled_from(NUMBERS), st.just(str(START - 3600))))),
        labels.CHANGE_TYPE: draw(optional(st.sampled_from(("hotfix", "change", "HOTFIX", "bugfix")))),
    }
    return {k: v for k, v in drawn.items() if v is not None}


# The watcher's clock advances; sources report times that are mostly now, sometimes late
# (out of order), sometimes a little ahead (another host's clock).
ADVANCE = st.one_of(st.floats(0, 5), st.floats(5, 30), st.sampled_from((10.0, 120.0, 300.0)), st.floats(100, 700))
SKEW = st.one_of(st.just(0.0), st.floats(-60, 0), st.floats(0, 2))
HEALTH = st.sampled_from(list(Health))
# CPU as the sources measure it: nanoseconds, in seconds (0.1 + 0.2 is not 0.3 in floats);
# now and then a sample no source should make (NaN, infinite, negative).
GOOD_USAGE = st.builds(Usage, st.integers(0, 10**15).map(lambda ns: ns / 1e9), st.floats(0, 1e12))
USAGE = st.one_of(GOOD_USAGE, GOOD_USAGE, GOOD_USAGE, st.builds(Usage, st.floats(), st.floats()))


class StateMachine(RuleBasedStateMachine):
    """Random observations through ``Core.submit`` (hence ``state.apply``), invariants after each."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = START
        self.registry = CollectorRegistry()
        self.metrics = SelfMetrics(self.registry)
        self.core = Core(settings=STATE_SETTINGS, metrics=self.metrics, clock=lambda: self.clock)
        self.events: list[DomainEvent] = []
        self.core.subscribe(self.events.append)
        self.registry.register(DeploymentCollector(snapshot=self.core.snapshot, settings=STATE_SETTINGS))
        # A container's identity is fixed for its lifetime: each id keeps the one it was born with.
        self.identities: dict[str, Identity] = {}
        self.scraped: State | None = None

    # -- helpers

    def submit(self, observation: Observation) -> None:
        before, done = self.core.state, len(self.events)
        self.core.submit(observation)
        check_step(before, self.core.state)
        # Every status change is told by its event: replayed on the statuses before, they give those after.
        after = {key: (d.rollout.revision, d.rollout.status) for key, d in self.core.state.deployments.items()}
        assert replay(before, self.events[done:]) == after

    def at(self, skew: float) -> float:
        return self.clock + skew

    def instance(self, instance_id: str, *, running: bool, extra: Mapping[str, Any]) -> Instance:
        return Instance(
            id=instance_id,
            identity=self.identities[instance_id],
            running=running,
            running_since=self.clock - extra["ran"] if running else None,
            has_healthcheck=extra["healthcheck"],
            health=extra["health"],
            exit_code=None if running else extra["exit_code"],
            exited_at=None if running else self.clock - extra["exited_ago"],
            exit_requested=extra["exit_requested"],
            oom_killed=extra["oom"],
            restart_count=extra["restarts"],
            inspected=extra["inspected"],
            start_error="" if running else extra["start_error"],
        )

    runtime = st.fixed_dictionaries(
        {
            "ran": st.floats(0, 60),
            "exited_ago": st.floats(0, 60),
            "healthcheck": st.booleans(),
            "health": HEALTH,
            "exit_code": st.sampled_from((0, 1, 137, 143, -1, 255)),
            "exit_requested": st.booleans(),
            "oom": st.booleans(),
            "restarts": st.integers(0, 5),
            "inspected": st.booleans(),
            "start_error": st.sampled_from(("", "", "exit code 127: exec: not found")),
        }
    )

    # -- rules: time passes, containers appear and change, resyncs, stats polls, scrapes

    @rule(advance=ADVANCE)
    def tick(self, advance: float) -> None:
        self.clock += advance
        self.submit(Tick(self.clock))

    @rule(
        raw=deployment_labels(),
        image=st.sampled_from(IMAGES),
        created=st.floats(-50, 1),
        running=st.booleans(),
        extra=runtime,
        skew=SKEW,
    )
    def container_seen_first(
        self, raw: dict[str, str], image: str, created: float, running: bool, extra: dict[str, Any], skew: float
    ) -> None:
        parsed = labels.parse(
            raw, image=image, image_id="sha256:0123456789ab", created_at=self.clock + created, now=self.clock,
            settings=STATE_SETTINGS.labels,
        )  # fmt: skip
        if parsed.identity is None:
            return
        instance_id = f"c{len(self.identities)}"
        self.identities[instance_id] = parsed.identity
        self.submit(InstanceSeen(self.at(skew), self.instance(instance_id, running=running, extra=extra)))

    @precondition(lambda self: self.identities)
    @rule(data=st.data(), running=st.booleans(), extra=runtime, skew=SKEW)
    def container_seen_again(self, data: st.DataObject, running: bool, extra: dict[str, Any], skew: float) -> None:
        instance_id = data.draw(st.sampled_from(sorted(self.identities)))
        self.submit(InstanceSeen(self.at(skew), self.instance(instance_id, running=running, extra=extra)))

    @rule(
        data=st.data(),
        kind=st.sampled_from(("start", "stop", "exit", "oom", "health", "gone")),
        code=st.integers(-1, 255),
        health=HEALTH,
        skew=SKEW,
    )
    def container_changed(self, data: st.DataObject, kind: str, code: int, health: Health, skew: float) -> None:
        instance_id = data.draw(st.sampled_from([*sorted(self.identities), "unknown"]))
        at = self.at(skew)
        changes: dict[str, InstanceChange] = {
            "start": InstanceStarted(at, instance_id),
            "stop": InstanceStopRequested(at, instance_id),
            "exit": InstanceExited(at, instance_id, code),
            "oom": InstanceOOMKilled(at, instance_id),
            "health": InstanceHealth(at, instance_id, health),
            "gone": InstanceGone(at, instance_id),
        }
        self.submit(changes[kind])

    @rule(data=st.data(), skew=SKEW)
    def resync(self, data: st.DataObject, skew: float) -> None:
        present = data.draw(st.lists(st.sampled_from(sorted(self.identities) or ["none"]), unique=True))
        instances = tuple(
            self.instance(i, running=data.draw(st.booleans()), extra=data.draw(self.runtime))
            for i in present
            if i in self.identities
        )
        self.submit(Resync(self.at(skew), Origin.CONTAINER, instances))

    @rule(data=st.data(), skew=SKEW)
    def usage_sampled(self, data: st.DataObject, skew: float) -> None:
        # Usually what a stats poll samples (every running instance), sometimes any ids.
        polled = st.just(self.core.state.running_instance_ids())
        anything = st.lists(st.sampled_from([*sorted(self.identities), "unknown"]), unique=True)
        ids = data.draw(st.one_of(polled, anything))
        self.submit(UsageSampled(self.at(skew), {i: data.draw(USAGE) for i in ids}))

    @precondition(lambda self: self.core.state is not self.scraped)  # scrapes are slow: one per new state
    @rule()
    def scrape(self) -> None:
        self.scraped = self.core.state
        check_exposition(self.registry, self.core.state)

    # -- invariants of every state

    @invariant()
    def consistent(self) -> None:
        check_state(self.core.state)

    def teardown(self) -> None:
        check_exposition(self.registry, self.core.state)
        # Every state the machine reaches is a file the watcher loads again: within the ranges the codec checks.
        assert codec.decode(codec.encode(self.core.state)) == self.core.state


TestStateMachine = StateMachine.TestCase
TestStateMachine.settings = settings(
    max_examples=STATE_MACHINE_EXAMPLES, stateful_step_count=40, suppress_health_check=[HealthCheck.too_slow]
)


@given(data=st.data())
def test_cpu_counter_never_decreases(data: st.DataObject) -> None:
    """Containers sampled, restarted, replaced and resynced away: the CPU counter only grows."""
    run = Run()
    born = 0
    for _ in range(data.draw(st.integers(1, 30))):
        live = sorted(run.state.owners)
        step = data.draw(st.sampled_from(("new", "sample", "gone", "resync") if live else ("new",)))
        at = 100.0 + len(run.events)
        before = run.state
        if step == "new":
            run(started(f"c{born}", data.draw(st.sampled_from(("1.0.0", "2.0.0"))), at))
            born += 1
        elif step == "sample":
            ids = data.draw(st.lists(st.sampled_from(live), unique=True, min_size=1))
            run(UsageSampled(at, {i: data.draw(USAGE) for i in ids}))
        elif step == "gone":
            run(InstanceGone(at, data.draw(st.sampled_from(live))))
        else:
            kept = data.draw(st.lists(st.sampled_from(live), unique=True))
            run(Resync(at, Origin.CONTAINER, tuple(run.d().members[i].instance for i in kept)))
        check_step(before, run.state)


def check_state(state: State) -> None:
    """What holds for every state: statuses, owners ↔ members, bounds."""
    assert len(state.deployments) <= STATE_SETTINGS.retention.max_deployments
    for key, d in state.deployments.items():
        assert d.key == key
        assert d.rollout.status.value in (0, 1, 2)
        assert d.rollout.revision >= 1
        assert len(d.history) <= STATE_SETTINGS.retention.history_versions
        assert len({(h.version, h.commit) for h in d.history}) == len(d.history)
        assert d.rollbacks < d.rollout.revision
        assert math.isfinite(d.cpu_seconds) and d.cpu_seconds >= 0
        assert len(d.durations.counts) == len(DURATION_BUCKETS) + 1 and d.durations.total >= 0
        for instance_id, member in d.members.items():
            assert member.instance.id == instance_id
            assert member.instance.identity.key == key
            assert state.owners.get(instance_id) == key, (
                f"{instance_id} in {key} but owned by {state.owners.get(instance_id)}"
            )
        assert (d.gone_since is None) == bool(d.members)
        f = d.dora
        assert f.change_failures <= f.successes + f.failures and f.rework <= f.successes + f.failures
        assert f.recoveries.count <= f.change_failures and f.lead_times.count <= f.successes + f.change_failures
        assert f.failed_revision <= d.rollout.revision
    assert len(state.retired) <= STATE_SETTINGS.retention.max_deployments
    for instance_id, key in state.owners.items():
        assert key in state.deployments and instance_id in state.deployments[key].members


def check_step(before: State, after: State) -> None:
    """What only grows while a deployment exists: revision, rollbacks, CPU, durations; and its DORA
    figures, also across its retirement and return."""
    for key, kept in before.retired.items():
        back = after.deployments.get(key)
        if back is not None and key not in before.deployments:
            check_dora_grew(kept.dora, back.dora)
    for key, old in before.deployments.items():
        new = after.deployments.get(key)
        if new is None:
            retired = after.retired.get(key)
            assert retired is None or retired.dora == old.dora, "a dropped deployment's DORA figures changed"
            continue  # dropped after retention: its series end
        check_dora_grew(old.dora, new.dora)
        assert new.rollout.revision >= old.rollout.revision
        assert new.rollbacks >= old.rollbacks
        assert new.cpu_seconds >= old.cpu_seconds, f"CPU of {key} went {old.cpu_seconds!r} → {new.cpu_seconds!r}"
        assert new.durations.total >= old.durations.total
        assert all(n >= o for n, o in zip(new.durations.counts, old.durations.counts, strict=True))
        if new.rollout.revision == old.rollout.revision and old.rollout.status is not Status.IN_PROGRESS:
            # Final, except a premature success (judged while behind the stream) revised to failed.
            revised = (old.rollout.status, new.rollout.status) == (Status.SUCCESS, Status.FAILED)
            assert new.rollout.status is old.rollout.status or revised, "a finished rollout changed its status"


def check_dora_grew(old: Dora, new: Dora) -> None:
    """The DORA counters only grow (a deployment that comes back continues them)."""
    for name in ("successes", "failures", "change_failures", "rework"):
        assert getattr(new, name) >= getattr(old, name), name
    for before, after in ((old.lead_times, new.lead_times), (old.recoveries, new.recoveries)):
        assert all(n >= o for n, o in zip(after.counts, before.counts, strict=True)) and after.total >= before.total


def check_exposition(registry: CollectorRegistry, state: State) -> None:
    """Both formats parse back with prometheus-client's own parsers, to the same values, which are the state's."""
    text = samples_of(parse_text(generate_latest(registry).decode("utf-8")))
    openmetrics = samples_of(parse_openmetrics(generate_openmetrics(registry).decode("utf-8")))
    # Process and GC figures move between two renderings; everything else must agree.
    moving = ("process_", "python_gc_")
    assert {p: v for p, v in text.items() if not p[0].startswith(moving)} == {
        p: v for p, v in openmetrics.items() if not p[0].startswith(moving)
    }
    assert text[("deployment_watcher_tracked_deployments", frozenset())] == len(state.deployments)
    statuses = [v for (name, _), v in text.items() if name == "deployment_status"]
    assert len(statuses) == len(state.deployments) and set(statuses) <= {0, 1, 2}
    for d in state.deployments.values():
        check_deployment_samples(text, d)
    # exposition.dora_histograms: environment (the default): each environment's sums.
    for environment in {d.key.environment for d in state.deployments.values() if not d.usage_only}:
        mine = [d.dora for d in state.deployments.values() if d.key.environment == environment and not d.usage_only]
        where = frozenset({("environment", environment)})
        assert text[("deployment_lead_time_seconds_count", where)] == sum(f.lead_times.count for f in mine)
        assert text[("deployment_recovery_seconds_count", where)] == sum(f.recoveries.count for f in mine)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(families: Iterable[Metric]) -> Samples:
    samples: Samples = {}
    for family in families:
        for s in family.samples:
            point = (s.name, frozenset(s.labels.items()))
            assert point not in samples, f"duplicate sample {point}"
            samples[point] = s.value
    return samples


def check_deployment_samples(samples: Samples, d: Deployment) -> None:
    key = frozenset({("deployment", d.key.name), ("environment", d.key.environment)})
    r = d.rollout

    def value(name: str, **extra: str) -> float:
        return samples[(name, key | frozenset(extra.items()))]

    assert value("deployment_status") == r.status.value
    assert value("deployment_version") == r.revision
    assert value("deployment_timestamp", version=r.version) == r.started_at
    assert (
        value(
            "deployment_info", status=r.status.text, version=r.version, commit=r.commit, image=r.image, kind="container"
        )
        == 1
    )
    assert value("deployment_cpu_usage_seconds_total") == d.cpu_seconds
    assert value("deployment_memory_usage_bytes") == d.memory_bytes
    assert value("deployment_rollback_count_total") == d.rollbacks
    assert value("deployment_duration_seconds_count") == d.durations.count
    assert value("deployment_duration_seconds_sum") == d.durations.total
    assert value("deployment_duration_seconds_bucket", le="+Inf") == d.durations.count
    for seen in d.history[: STATE_SETTINGS.exposition.version_info_versions]:
        assert value("deployment_version_info", version=seen.version, commit_sha=seen.commit) == 1
    f = d.dora
    assert value("deployment_rollouts_total", outcome="success") == f.successes
    assert value("deployment_rollouts_total", outcome="failed") == f.failures
    assert value("deployment_change_failures_total") == f.change_failures
    assert value("deployment_rework_total") == f.rework


# -- labels.parse over arbitrary label dicts

LABEL_KEYS = st.one_of(
    st.sampled_from((*labels.PROBLEM_LABELS, labels.COMPOSE_PROJECT, labels.COMPOSE_SERVICE)),
    st.text(CHARS, max_size=10),
)
FREEFORM_LABELS = LABEL_KEYS.flatmap(lambda _: st.dictionaries(LABEL_KEYS, odd_text, max_size=12))
LABEL_SETTINGS = st.builds(
    LabelSettings,
    default_environment=st.sampled_from(("production", "ü")),
    track_compose=st.booleans(),
    max_value_length=st.integers(8, 200),
)
TEXT_LABELS = (labels.NAME, labels.ENVIRONMENT, labels.VERSION, labels.COMMIT)


def is_clean(value: str, *, limit: int) -> bool:
    """Safe as a Prometheus label value and readable: printable, UTF-8, bounded."""
    return len(value) <= limit and value.isprintable() and value == value.encode("utf-8").decode("utf-8")


@given(
    raw=FREEFORM_LABELS,
    image=st.one_of(st.sampled_from(IMAGES), odd_text),
    image_id=st.one_of(st.just("sha256:0123456789abcdef"), odd_text),
    created_at=st.floats(0, 2e9),
    label_settings=LABEL_SETTINGS,
)
def test_labels_parse_never_raises_and_bounds_values(
    raw: dict[str, str], image: str, image_id: str, created_at: float, label_settings: LabelSettings
) -> None:
    """Any label dict parses: values printable and bounded, and every change to a value is reported."""
    parsed = labels.parse(
        raw, image=image, image_id=image_id, created_at=created_at, now=START, settings=label_settings
    )
    limit = label_settings.max_value_length
    problems = {p.label for p in parsed.problems}
    assert all(p.message and "\n" not in p.message for p in parsed.problems)
    identity = parsed.identity
    if identity is None:
        if labels.NAME in raw:
            assert labels.NAME in problems, "a deployment.name that was ignored must be reported"
        return
    environment = identity.key.environment  # the configured default when the label says nothing
    from_labels = [identity.key.name, identity.version, identity.commit, identity.image]
    for value in from_labels + ([environment] if environment != label_settings.default_environment else []):
        assert is_clean(value, limit=limit), f"unsafe value {value!r}"
    assert identity.key.name and identity.key.environment and identity.version
    for label in TEXT_LABELS:
        if label in raw and not is_clean(raw[label].strip(), limit=limit):
            assert label in problems, f"{label}={raw[label]!r} was changed without a problem"
    assert math.isfinite(identity.deployed_at) and identity.deployed_at >= 0
    if labels.TIMESTAMP in raw and identity.deployed_at != _number(raw[labels.TIMESTAMP]):
        assert labels.TIMESTAMP in problems
    tuning = (
        (labels.STABLE_SECONDS, identity.stable_seconds),
        (labels.PROGRESS_DEADLINE, identity.progress_deadline_seconds),
    )
    for label, got in tuning:
        assert got is None or (math.isfinite(got) and got >= 0)
        if label in raw and got is None:
            assert label in problems
    if labels.STATUS in raw and identity.status_override is None:
        assert labels.STATUS in problems


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


# -- docker_causes over random and malformed Docker JSON

JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
        st.text(CHARS, max_size=20),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip


def field_of(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A JSON field: usually what Docker sends, sometimes anything at all."""
    return st.one_of(plausible, plausible, JSON)


def maybe(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object whose fields may each be missing."""
    return st.fixed_dictionaries({}, optional={k: field_of(v) for k, v in fields.items()})


ACTIONS = (
    "create", "start", "die", "kill", "stop", "oom", "destroy", "pause", "unpause", "rename",
    "health_status: healthy", "health_status: unhealthy", "health_status: bogus", "health_status", "exec_start: sh",
)  # fmt: skip
ATTRIBUTES = st.dictionaries(
    st.one_of(st.sampled_from(("exitCode", "signal", "deployment.name", "image", "name")), st.text(max_size=8)),
    field_of(st.one_of(st.sampled_from(("0", "1", "137", "9", "SIGTERM", "15", "x", "")), odd_text)),
    max_size=5,
)
EVENTS = maybe(
    {
        "Type": st.sampled_from(("container", "image", "network")),
        "Action": st.sampled_from(ACTIONS),
        "status": st.sampled_from(ACTIONS),
        "id": st.just("c0ffee"),
        "Actor": maybe({"ID": st.sampled_from(("c0ffee", "")), "Attributes": ATTRIBUTES}),
        "time": st.integers(0, 2**34),
        "timeNano": st.integers(0, 2**62),
    }
)
TIMES = st.sampled_from(
    (
        "2024-05-01T12:00:00.123456789Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59",
        "0002-01-01T00:00:00+23:59", "2024-13-01T00:00:00Z", "yesterday", "",
    )
)  # fmt: skip
INSPECTS = maybe(
    {
        "Id": st.sampled_from(("c0ffee", "")),
        "Name": st.just("/web-1"),
        "Created": TIMES,
        "Image": st.just("sha256:0123456789abcdef"),
        "RestartCount": st.integers(0, 10),
        "Config": maybe(
            {
                "Labels": st.one_of(deployment_labels(), FREEFORM_LABELS),
                "Image": st.sampled_from(IMAGES),
                "Healthcheck": maybe({"Test": st.sampled_from((["CMD", "true"], ["NONE"], []))}),
            }
        ),
        "State": maybe(
            {
                "Status": st.sampled_from(("running", "exited", "dead", "created", "restarting", "paused")),
                "Running": st.booleans(),
                "Paused": st.booleans(),
                "Restarting": st.booleans(),
                "OOMKilled": st.booleans(),
                "ExitCode": st.integers(0, 255),
                "StartedAt": TIMES,
                "Health": maybe({"Status": st.sampled_from(("healthy", "unhealthy", "starting", "none", "?"))}),
            }
        ),
    }
)


@given(event=EVENTS, track_compose=st.booleans())
def test_classify_never_raises(event: dict[str, Any], track_compose: bool) -> None:
    """Any event object gives a cause (with a finite time and an id) or nothing."""
    docker_causes.is_tracked(event, settings=LabelSettings(track_compose=track_compose))
    docker_causes.event_action(event)
    cause = docker_causes.classify(event)
    if cause is None:
        return
    assert math.isfinite(cause.at)
    assert isinstance(cause.container_id if isinstance(cause, Inspect) else cause.instance_id, str)
    if isinstance(cause, InstanceExited):
        assert isinstance(cause.exit_code, int)


@given(data=INSPECTS, label_settings=LABEL_SETTINGS)
def test_from_inspect_never_raises(data: dict[str, Any], label_settings: LabelSettings) -> None:
    """Any inspect object gives an Instance with sane fields, or None; label values are bounded."""
    instance, parsed = docker_causes.from_inspect(data, now=START, settings=label_settings)
    if instance is None:
        return
    assert instance.id and isinstance(instance.id, str)
    identity = instance.identity
    assert identity == parsed.identity
    limit = label_settings.max_value_length
    for value in (identity.key.name, identity.version, identity.commit, identity.image):
        assert is_clean(value, limit=limit)
    assert math.isfinite(identity.created_at) and math.isfinite(identity.deployed_at)
    assert instance.running_since is None or math.isfinite(instance.running_since)
    assert instance.exit_code is None or isinstance(instance.exit_code, int)
    assert isinstance(instance.restart_count, int) and instance.restart_count >= 0
    assert isinstance(instance.health, Health)


@given(text=odd_text)
def test_parse_time_never_raises(text: str) -> None:
    """Docker times parse to finite seconds or None, whatever the string."""
    got = jsonfields.time(text)
    assert got is None or math.isfinite(got)
