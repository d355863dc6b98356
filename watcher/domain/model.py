"""The domain's data: what a deployment is, its rollouts and instances. Plain immutable values.

A deployment is (name, environment). Its current *rollout* is the last time a new version
appeared (in a container, or in a report from deploy tooling); a rollout goes
in_progress → success | failed and then stays so until the next.
State is immutable: a scrape reads one ``State`` object and never sees a half-applied change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from watcher.domain.analysis import Analysis, Request
from watcher.domain.pmap import PMap


class Status(enum.Enum):
    """A rollout's status; the value is what ``deployment_status`` exports."""

    FAILED = 0
    SUCCESS = 1
    IN_PROGRESS = 2

    @property
    def text(self) -> str:
        """How the status is written everywhere: labels, the CI/CD API, the state file, logs."""
        return self.name.lower()

    @classmethod
    def from_text(cls, text: str) -> Status:
        """The status written ``text``; ValueError naming the choices for anything else."""
        try:
            return _STATUS_BY_TEXT[text]
        except KeyError:
            raise ValueError(f"{text!r:.40} is not one of {', '.join(_STATUS_BY_TEXT)}") from None

    @staticmethod
    def texts() -> tuple[str, ...]:
        """The statuses' texts in the order a rollout goes through them."""
        return tuple(_STATUS_BY_TEXT)


_STATUS_BY_TEXT = {status.text: status for status in (Status.IN_PROGRESS, Status.SUCCESS, Status.FAILED)}


class Judge(enum.Enum):
    """Who decides whether the current rollout succeeded; the value is what the state file holds."""

    CONTAINERS = "containers"  # the rollout rules over its containers: health, exits, restarts, stable time
    DEPLOY_TOOLING = "deploy_tooling"  # reports through the CI/CD API; the progress deadline catches a silent job
    # An orchestrator (Swarm): the service's update state and its running replicas say how the rollout went.
    ORCHESTRATOR = "orchestrator"


class Origin(enum.Enum):
    """The adapter that reports an instance: a resync of one source removes only its own instances."""

    CONTAINER = "container"


class Health(enum.Enum):
    """A HEALTHCHECK's verdict, as Docker reports it (``NONE``: no healthcheck result)."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class DeploymentKey(NamedTuple):
    name: str
    environment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """What an instance's labels say it is; fixed for its lifetime."""

    key: DeploymentKey
    version: str
    commit: str
    image: str
    created_at: float
    deployed_at: float  # deploy start: the deployment.timestamp label, else created_at
    status_override: Status | None = None
    stable_seconds: float | None = None  # per-deployment tuning; None: the configured default
    progress_deadline_seconds: float | None = None
    commit_time: float | None = None  # when the deployed commit was made (deployment.commit_time)
    hotfix: bool = False  # deployment.change_type=hotfix: a fix of a change that failed
    analysis: Request | None = None  # deployment.analysis: the checks it asks for


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """One running unit of a deployment (a container), as last seen in full."""

    id: str
    identity: Identity
    running: bool
    running_since: float | None = None
    has_healthcheck: bool = False
    health: Health = Health.NONE
    exit_code: int | None = None  # set while exited
    exited_at: float | None = None  # when it exited, while exited (if the source knows)
    exit_requested: bool = False  # the exit followed a stop request: not a crash
    oom_killed: bool = False
    restart_count: int = 0
    # Why its last start failed, in the engine's words ('': it did not); such a container never ran.
    start_error: str = ""
    source: Origin = Origin.CONTAINER
    # The orchestrated service whose task this container is ("" for none): it belongs to that service's
    # deployment, for its CPU and memory only; the orchestrator, not its containers, judges rollouts.
    service_id: str = ""
    # False while known from events alone: whether it has a health check (hence when it is
    # ready) is only in the full facts, so the rules wait for them.
    inspected: bool = True

    @property
    def unstarted(self) -> bool:
        """Created and never started (or paused): not running, not exited, no failed start."""
        return not self.running and self.exit_code is None and not self.start_error


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float  # cumulative since the instance (re)started
    memory_bytes: float  # working set


# Rollouts take seconds to tens of minutes.
DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    revision: int
    version: str
    commit: str
    image: str
    started_at: float
    status: Status = Status.IN_PROGRESS
    finished_at: float | None = None
    reason: str = ""
    rollback: bool = False
    members: frozenset[str] = frozenset()  # instances of this rollout (replicas included)
    trigger_created_at: float = 0.0  # creation time of the instance that started it
    deadline_at: float = 0.0
    # When the watcher saw it begin, where its deadline counts from (None: a file of an older watcher).
    seen_at: float | None = None
    witnessed: bool = True  # seen as it began (not found by a resync): its duration is known
    judge: Judge = Judge.CONTAINERS
    commit_time: float | None = None  # when the commit it deploys was made: its lead time starts there
    hotfix: bool = False  # marked as a hotfix: rework, and the rollout before it needed one
    analysis: Analysis | None = None  # its checks against Prometheus, when it asked for them


class UpdateState(enum.Enum):
    """Where an orchestrator's update of a service stands; NONE: no update since it was created, or
    the last one changed nothing in its task template. The values are the state file's (and, being
    Swarm's words, those of ``deployment_swarm_update_state``); a source translates its own into these."""

    NONE = ""
    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"

    @property
    def rolling_back(self) -> bool:
        """A rollback: the orchestrator goes back to the previous task template."""
        return self in (UpdateState.ROLLBACK_STARTED, UpdateState.ROLLBACK_PAUSED, UpdateState.ROLLBACK_COMPLETED)


class Initiator(enum.Enum):
    """Who started what the orchestrator does: a person (a command, a click), or the orchestrator
    itself (a rollback after an update failed)."""

    PERSON = "person"
    ORCHESTRATOR = "orchestrator"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestratedService:
    """What an orchestrator (Swarm) says of the service behind a deployment, as last seen: replicas it
    runs across its nodes, and how its update goes."""

    id: str
    name: str
    template: str  # a fingerprint of its task template: a new one is a new rollout, a scale is not
    update_state: UpdateState = UpdateState.NONE
    message: str = ""  # the orchestrator's words on the update (why it paused, or rolled back)
    desired: int = 0  # replicas (tasks) the orchestrator wants running
    running: int = 0
    removed: bool = False  # the service was removed: the deployment leaves after retention
    # The current rollout is the orchestrator's own rollback (of an update that failed), not a person's.
    rolled_back_failure: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionRecord:
    """One rollout of a deployment as it ended (its verdict, or superseded before one): what
    ``watcher.domain.revisions`` keeps of the last ``retention.revisions`` of them."""

    revision: int
    version: str
    previous_version: str  # the version deployed before it ("" for the first)
    commit: str
    status: Status  # in progress: superseded before its verdict
    reason: str
    judge: Judge
    started_at: float
    finished_at: float | None
    duration: float | None  # seconds from start to verdict; None: unknown
    rollback: bool
    analysis: str | None  # its analysis's outcome text (passed, failed, …); None: it had none


@dataclass(frozen=True, slots=True)
class VersionSeen:
    version: str
    commit: str
    revision: int
    started_at: float


# Lead times: minutes (a one-line fix shipped at once) to half a year (a long-lived branch).
LEAD_TIME_BUCKETS = (
    300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 345600.0, 604800.0,
    1209600.0, 2592000.0, 7776000.0, 15552000.0,
)  # fmt: skip
# Recovery: a minute (an automatic rollback) to a month; the DORA levels part at 1 h, 1 d and 1 week.
RECOVERY_BUCKETS = (
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0, 604800.0, 2592000.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bucket of ``bounds`` (upper bounds, seconds), then +Inf; and the sum: rollout durations,
    lead times, recovery times."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        """The empty histogram of ``bounds``: one object, shared by every deployment that has observed nothing."""
        empty = _EMPTY.get(bounds)
        if empty is None:
            empty = _EMPTY[bounds] = cls(bounds, (0,) * (len(bounds) + 1))
        return empty

    def observe(self, seconds: float) -> Histogram:
        index = next((i for i, le in enumerate(self.bounds) if seconds <= le), len(self.bounds))
        counts = list(self.counts)
        counts[index] += 1
        return Histogram(self.bounds, shared_counts(tuple(counts)), self.total + seconds)

    @property
    def count(self) -> int:
        return sum(self.counts)


_EMPTY: dict[tuple[float, ...], Histogram] = {}
# Counts tuples are alike across deployments (one rollout of 40 s: the same 11 numbers): one of each is
# kept, up to this many (then the cache starts over), so 5,000 deployments share a handful (issue #21).
_COUNTS: dict[tuple[int, ...], tuple[int, ...]] = {}
_COUNTS_KEPT = 4096


def shared_counts(counts: tuple[int, ...]) -> tuple[int, ...]:
    """``counts``, or an equal tuple already in use."""
    found = _COUNTS.get(counts)
    if found is None:
        if len(_COUNTS) >= _COUNTS_KEPT:
            _COUNTS.clear()
        found = _COUNTS[counts] = counts
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Dora:
    """A deployment's DORA figures so far (``watcher.domain.dora`` keeps them): counts only grow."""

    successes: int = 0  # rollouts whose first verdict was success
    failures: int = 0  # rollouts whose first verdict was failed
    change_failures: int = 0  # rollouts that needed intervention, each at most once
    rework: int = 0  # hotfix rollouts, counted at their first verdict
    lead_times: Histogram = field(default_factory=lambda: Histogram.empty(LEAD_TIME_BUCKETS))
    recoveries: Histogram = field(default_factory=lambda: Histogram.empty(RECOVERY_BUCKETS))
    failing_since: float | None = None  # the first change failure not yet followed by a success
    failed_revision: int = 0  # the last revision counted as a change failure (revisions only grow)
    commits: tuple[str, ...] = ()  # commits whose lead time is counted, newest first (a bounded memory)


NO_DORA = Dora()  # a deployment's figures before its first verdict: one object shared by all


@dataclass(frozen=True, slots=True)
class Retired:
    """The DORA figures of a deployment dropped by retention, kept so that one coming back continues them."""

    dora: Dora
    dropped_at: float


@dataclass(frozen=True, slots=True)
class Member:
    """An instance of a deployment with the watcher's bookkeeping."""

    instance: Instance
    updated_at: float  # `at` of the last observation applied: older ones are stale
    cpu_nanos: int = 0  # cumulative since the instance (re)started
    memory_bytes: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    key: DeploymentKey
    rollout: Rollout
    history: tuple[VersionSeen, ...] = ()  # newest first, one entry per (version, commit)
    # The last rollouts with a verdict (or superseded), newest first, at most retention.revisions.
    revisions: tuple[RevisionRecord, ...] = ()
    rollbacks: int = 0
    durations: Histogram = field(default_factory=lambda: Histogram.empty(DURATION_BUCKETS))
    members: Mapping[str, Member] = field(default_factory=dict)
    # CPU of instances gone or restarted: keeps the counter monotonic. Integer nanoseconds,
    # because float sums depend on their order: moving a container's CPU from the live sum to
    # the retired one could lower the total by an ulp, which Prometheus reads as a reset.
    retired_cpu_nanos: int = 0
    gone_since: float | None = None
    reported_at: float | None = None  # the last report from deploy tooling (for retention)
    dora: Dora = NO_DORA
    # The orchestrated service as this watcher (following the orchestrator) last saw it; None when it
    # follows none: on a Swarm worker, a deployment of tasks has only their CPU and memory.
    service: OrchestratedService | None = None

    @property
    def usage_only(self) -> bool:
        """Swarm tasks on a node whose watcher does not follow their service (a worker, a manager
        that is not the leader): their CPU and memory are all it knows; another watcher judges."""
        return self.rollout.judge is Judge.ORCHESTRATOR and self.service is None

    @property
    def begun(self) -> bool:
        """Whether a rollout of it began here (every one is in the history): not so for Swarm tasks
        known alone (a worker, a manager that has not read their service yet)."""
        return bool(self.history)

    @property
    def removed(self) -> bool:
        """No instance of it is left (its containers removed, or its Swarm service): kept for
        retention, shown as removed rather than as broken."""
        return self.gone_since is not None or (self.service is not None and self.service.removed)

    @property
    def cpu_seconds(self) -> float:
        return (self.retired_cpu_nanos + sum(m.cpu_nanos for m in self.members.values())) / 1e9

    @property
    def memory_bytes(self) -> float:
        return sum(m.memory_bytes for m in self.members.values() if m.instance.running)

    def current(self) -> list[Instance]:
        """The instances of the current rollout that still exist."""
        return [self.members[i].instance for i in self.rollout.members if i in self.members]


@dataclass(frozen=True, slots=True)
class State:
    """Persistent mappings (``PMap``, whatever mapping it is given): the next state shares all but what changed."""

    deployments: Mapping[DeploymentKey, Deployment] = field(default_factory=dict)
    owners: Mapping[str, DeploymentKey] = field(default_factory=dict)  # instance id → deployment
    retired: Mapping[DeploymentKey, Retired] = field(default_factory=dict)  # DORA figures of dropped deployments
    # The machine's cache of what it would otherwise walk every deployment for (``watcher.domain.index``):
    # no part of the facts, not compared; the machine alone reads it (and may set it on a state). An
    # ``Index`` (typed ``object`` here: the index module knows the model, not the reverse).
    index: object = field(default=None, compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("deployments", "owners", "retired"):
            object.__setattr__(self, name, PMap.of(getattr(self, name)))

    def running_instance_ids(self) -> list[str]:
        return [m.instance.id for d in self.deployments.values() for m in d.members.values() if m.instance.running]

    def unstarted_instance_ids(self) -> list[str]:
        """Instances of rollouts in progress created and not started (nor exited, nor failed to start):
        an engine may send no event at all when their start fails, so the source asks it."""
        return [
            i for d in self.deployments.values() if d.rollout.status is Status.IN_PROGRESS
            for i in d.rollout.members if i in d.members and d.members[i].instance.unstarted
        ]  # fmt: skip


def iter_sorted(state: State) -> Iterator[Deployment]:
    """Deployments in a stable order, for exposition."""
    for key in sorted(state.deployments):
        yield state.deployments[key]
