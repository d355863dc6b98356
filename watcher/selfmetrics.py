"""The watcher's own metrics: ordinary prometheus-client metrics, pre-created at zero."""

from __future__ import annotations

import enum
import platform
import re
from collections.abc import Iterable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from watcher import __version__
from watcher.config import webconfig
from watcher.domain import events, labels, times
from watcher.domain.analysis import Outcome

PREFIX = "deployment_watcher"
M = TypeVar("M", Counter, Gauge)

# Docker's container actions; health_status and exec_* carry details after a colon.
KNOWN_ACTIONS = (
    "create", "start", "restart", "die", "kill", "stop", "oom", "destroy",
    "health_status", "pause", "unpause", "rename", "update", "attach", "exec_create",
    "exec_start", "exec_die",
)  # fmt: skip
_ACTION = re.compile(r"[a-z_]{1,32}")
STATS_SOURCES = ("cgroup", "api")
# What became of a CI/CD API request (README explains each).
API_OUTCOMES = (
    "started", "updated", "unchanged", "stale", "invalid", "too_large", "unauthorized", "disabled", "rejected",
)  # fmt: skip
EXPOSITION_PARTS = ("deployments", "own")
STREAM_LIMITS = ("total", "address")  # the event stream's caps a client was refused for
# The errors Python's accept loop reports and survives (it retries a second later).
ACCEPT_ERRORS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
HOST_REFUSALS = ("name", "malformed")  # why a browser's request was refused for its Host header
# The Swarm service events' actions (``type=service``).
SERVICE_ACTIONS = ("create", "update", "remove")
ANALYSIS_OUTCOMES = tuple(o.text for o in Outcome if o is not Outcome.RUNNING)  # how an analysis can end
ANALYSIS_QUERY_RESULTS = ("ok", "nodata", "error")  # a value, an empty answer, a failure (watcher.sources.analysis)
SWARM_ROLLBACK_RESULTS = ("ok", "error")  # asked of Swarm, or the request failed (watcher.sources.swarm.rollback)


class EngineErrorKind(enum.StrEnum):
    """What went wrong on the Docker side (``watcher.sources.engine.EngineError``); the label values of
    ``deployment_watcher_docker_errors_total``, whose help text is made of each kind's ``meaning``."""

    NO_SOCKET = "no_socket", "no socket at the configured path, or none found"
    CONNECTION = "connection", "refused, reset, or the stream ended"
    TIMEOUT = "timeout", "a request unanswered within docker.request_timeout_seconds"
    HTTP_ERROR = "http_error", "an error status"
    PROTOCOL = "protocol", "an answer that is not what Docker sends"
    INVALID_EVENT = "invalid_event", "an event line that is not a JSON object"
    OVERSIZED_EVENT = "oversized_event", "an event line over 16 MiB: the event is lost, the resync repairs it"

    meaning: str

    def __new__(cls, value: str, meaning: str) -> EngineErrorKind:
        kind = str.__new__(cls, value)
        kind._value_ = value
        kind.meaning = meaning
        return kind


# `_created` series of pre-created zero counters are noise; the switch is process-wide.
disable_created_metrics()  # type: ignore[no-untyped-call]


class SelfMetrics:
    """The watcher's own health, registered in ``registry`` with process and runtime metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Info(f"{PREFIX}_build", "Version of the watcher.", registry=registry).info(
            {"version": __version__, "python_version": platform.python_version()}
        )
        self.events = _labelled(
            Counter, "events", "Docker container events received, by action.", "action", KNOWN_ACTIONS, registry
        )
        self.swarm_events = _labelled(
            Counter, "swarm_events", "Docker Swarm service events received (by the leader's watcher), by action.",
            "action", SERVICE_ACTIONS, registry,
        )  # fmt: skip
        self.docker_up = _plain(
            Gauge, "docker_up", "1 while connected to the Docker Engine and synced, else 0.", registry
        )
        self.reconnects = _plain(
            Counter, "docker_reconnects", "Connections to the Docker Engine lost and retried.", registry
        )
        self.docker_errors = _labelled(
            Counter, "docker_errors",
            "Failures of the Docker Engine connection, each followed by a reconnect and a full resync, by kind: "
            + ", ".join(f"{kind} ({kind.meaning})" for kind in EngineErrorKind) + ".",
            "kind", EngineErrorKind, registry,
        )  # fmt: skip
        self.resyncs = _plain(
            Counter, "resyncs", "Full relists of the containers (after each connect, and periodically).", registry
        )
        self.label_errors = _labelled(
            Counter, "label_errors", "Problems found in deployment labels (each logged once per container), by label.",
            "label", labels.PROBLEM_LABELS, registry,
        )  # fmt: skip
        self.state_changes = _labelled(
            Counter, "state_changes",
            "Things the state machine did: rollouts started, finished, superseded and revised, deployments "
            "rejected by the cap or dropped after retention, stale observations ignored, health changes of a "
            "rollout's containers, times refused as clock skew.",
            "kind", [event.kind for event in events.EVENT_TYPES], registry,
        )  # fmt: skip
        self.clock_skew = _labelled(
            Counter, "clock_skew",
            "Times refused as clock skew, by source: a report's started_at or finished_at after its arrival, a "
            "deployment.timestamp label after the container was seen, a finish before its rollout began, a "
            "commit_time after its deploy began. The fallback is used (the arrival, the creation time, no "
            "duration, no lead time) and a warning logged.",
            "source", times.SOURCES, registry,
        )  # fmt: skip
        self.event_lag = Histogram(
            f"{PREFIX}_event_lag_seconds",
            "Time from a Docker event (its timeNano) until the state reflects it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.stats_duration = Histogram(
            f"{PREFIX}_stats_poll_duration_seconds",
            "Time one stats poll over all running tracked containers took.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.stats_errors = _plain(
            Counter, "stats_errors", "Containers whose stats could not be read in a poll.", registry
        )
        self.stats_source = _labelled(
            Gauge, "stats_source",
            "1 for the source CPU and memory are read from (cgroup files or the Docker stats API), "
            "0 for the other; both 0 until it is chosen.",
            "source", STATS_SOURCES, registry,
        )  # fmt: skip
        self.basic_auth_failures = _labelled(
            Counter, "basic_auth_failures",
            "Requests refused by basic auth, by reason: missing (no Basic credentials), malformed, "
            "invalid (unknown user or wrong password).",
            "reason", webconfig.FAILURES, registry,
        )  # fmt: skip
        self.exposition_renders = _labelled(
            Counter, "exposition_renders",
            "Renderings of /metrics, by part: the deployment series (after a change of state) and the "
            "watcher's own metrics (with each rendering, and at the staleness bound).",
            "part", EXPOSITION_PARTS, registry,
        )  # fmt: skip
        self.exposition_duration = Histogram(
            f"{PREFIX}_exposition_render_duration_seconds",
            "Time one rendering of /metrics took (every format served, gzip copies included).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.deployments = _plain(Gauge, "tracked_deployments", "Deployments currently tracked and exported.", registry)
        self.api_requests = _labelled(
            Counter, "api_requests", "Requests to the CI/CD API (POST /api/v1/deployments), by outcome.", "outcome",
            API_OUTCOMES, registry,
        )  # fmt: skip
        self.stream_clients = _plain(
            Gauge, "stream_clients", "Clients connected to the event stream (GET /api/v1/events).", registry
        )
        self.stream_dropped = _plain(
            Counter,
            "stream_dropped_clients",
            "Event stream clients dropped for reading too slowly (their queue of events was full, or a write stalled).",
            registry,
        )
        self.stream_refused = _labelled(
            Counter, "stream_refused_clients",
            "Event stream clients refused with 503, by the cap they met: total (web.max_stream_clients) or "
            "address (web.max_stream_clients_per_address).",
            "limit", STREAM_LIMITS, registry,
        )  # fmt: skip
        self.accept_errors = _labelled(
            Counter, "http_accept_errors",
            "Connections the HTTP server could not accept, by errno: EMFILE (the process's descriptor limit), "
            "ENFILE (the system's), ENOBUFS, ENOMEM; the server tries again a second later.",
            "kind", ACCEPT_ERRORS, registry,
        )  # fmt: skip
        self.host_refusals = _labelled(
            Counter, "host_refusals",
            "Requests from browser pages refused with 403 for their Host header (DNS rebinding defence), by kind: "
            "name (not an IP address, localhost or a name in web.allowed_hosts), malformed (missing or unreadable).",
            "kind", HOST_REFUSALS, registry,
        )  # fmt: skip
        self.board_renders = _plain(
            Counter,
            "board_renders",
            "Renderings of the board's table (GET /), in a worker thread: one per change of state and environment "
            "filter, and when an age it shows would change; other loads are served from memory.",
            registry,
        )
        self.state_saves = _plain(Counter, "state_saves", "Successful writes of the state file.", registry)
        self.state_save_errors = _plain(
            Counter,
            "state_save_errors",
            "Writes of the state file that failed (read-only or full disk...); retried every 5 s and at each change.",
            registry,
        )
        self.state_last_save = _plain(
            Gauge,
            "state_last_save_timestamp_seconds",
            "Unix time of the last successful write of the state file (0: none since start-up).",
            registry,
        )
        self.state_load_errors = _plain(
            Counter,
            "state_load_errors",
            "State files found unreadable, corrupt or of an unknown schema at start-up: moved aside, started fresh.",
            registry,
        )
        self.state_journal_dropped = _plain(
            Counter,
            "state_journal_dropped",
            "Lines of the state file's journal dropped at start-up: the first torn or garbled one (a save cut short "
            "by a crash or a full disk) and those after it; the rest of the state is loaded.",
            registry,
        )
        self.analysis_queries = _labelled(
            Counter, "analysis_queries",
            "Queries to Prometheus for rollout analysis, by result: ok (a value), nodata (an empty answer or NaN), "
            "error (unreachable, a timeout, an error status, an answer that is not one series).",
            "result", ANALYSIS_QUERY_RESULTS, registry,
        )  # fmt: skip
        self.analyses = _labelled(
            Counter, "analyses",
            "Rollout analyses ended, by outcome: passed, failed, or inconclusive (no check measured any data "
            "within the window: the rollout was judged as if unanalysed, and a warning logged).",
            "outcome", ANALYSIS_OUTCOMES, registry,
        )  # fmt: skip
        self.swarm_rollbacks = _labelled(
            Counter, "swarm_rollbacks",
            "Rollbacks of Swarm services the watcher asked for (their gate analysis failed, "
            "deployment.analysis.on_failure=rollback, analysis.allow_rollback on), by result: ok (Swarm rolls back), "
            "error (not rolled back, never asked again: refused, as by a read-only socket proxy, failed, or the "
            "service changed since).",
            "result", SWARM_ROLLBACK_RESULTS, registry,
        )  # fmt: skip

        self.asyncio_tasks = _plain(
            Gauge,
            "asyncio_tasks",
            "asyncio tasks alive, counted every second: back to the same number when idle; growth is a leak.",
            registry,
        )

    def stats_source_in_use(self, source: str) -> None:
        for each in STATS_SOURCES:
            self.stats_source.labels(each).set(1 if each == source else 0)

    def event(self, action: str) -> None:
        """A container event counted by its action."""
        self.events.labels(_action(action)).inc()

    def swarm_event(self, action: str) -> None:
        """A Swarm service event counted by its action."""
        self.swarm_events.labels(_action(action)).inc()


def _action(action: str) -> str:
    """The label value of an event's action: the part before a colon (health_status and exec_* carry
    details there), or "other" for what is no action's name (the engine's text bounds no series)."""
    base = action.split(":", 1)[0].strip()
    return base if _ACTION.fullmatch(base) else "other"


def _plain(kind: type[M], name: str, documentation: str, registry: CollectorRegistry) -> M:
    """A metric without labels, named under the watcher's prefix."""
    return kind(f"{PREFIX}_{name}", documentation, registry=registry)


def _labelled(
    kind: type[M], name: str, documentation: str, label: str, values: Iterable[str], registry: CollectorRegistry
) -> M:
    """A metric with one label, its series for each of ``values`` created at zero: a series that
    appears at its first increment hides that increment from rate() and increase()."""
    metric = kind(f"{PREFIX}_{name}", documentation, [label], registry=registry)
    for value in values:
        metric.labels(value)
    return metric
