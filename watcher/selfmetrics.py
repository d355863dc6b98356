"""The watcher's own metrics: ordinary prometheus-client metrics, pre-created at zero."""

from __future__ import annotations

import platform
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from watcher import __version__, labels

PREFIX = "deployment_watcher"

# Docker's container actions; health_status and exec_* carry details after a colon.
KNOWN_ACTIONS = (
    "create", "start", "restart", "die", "kill", "stop", "oom", "destroy",
    "health_status", "pause", "unpause", "rename", "update", "attach", "exec_create",
    "exec_start", "exec_die",
)  # fmt: skip
_ACTION = re.compile(r"[a-z_]{1,32}")
NOTE_KINDS = ("rollout_started", "rollout_finished", "superseded", "revised", "rejected", "dropped", "stale")


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
        self.events = Counter(
            f"{PREFIX}_events", "Docker container events received, by action.", ["action"], registry=registry
        )
        for action in KNOWN_ACTIONS:
            self.events.labels(action)
        self.docker_up = Gauge(
            f"{PREFIX}_docker_up", "1 while connected to the Docker Engine and synced, else 0.", registry=registry
        )
        self.reconnects = Counter(
            f"{PREFIX}_docker_reconnects", "Connections to the Docker Engine lost and retried.", registry=registry
        )
        self.resyncs = Counter(
            f"{PREFIX}_resyncs", "Full relists of the containers (after each connect, and periodically).",
            registry=registry,
        )  # fmt: skip
        self.label_errors = Counter(
            f"{PREFIX}_label_errors",
            "Problems found in deployment labels (each logged once per container), by label.",
            ["label"],
            registry=registry,
        )
        for label in labels.PROBLEM_LABELS:
            self.label_errors.labels(label)
        self.notes = Counter(
            f"{PREFIX}_state_changes",
            "Things the state machine did: rollouts started, finished, superseded and revised, deployments "
            "rejected by the cap or dropped after retention, stale observations ignored.",
            ["kind"],
            registry=registry,
        )
        for kind in NOTE_KINDS:
            self.notes.labels(kind)
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
        self.stats_errors = Counter(
            f"{PREFIX}_stats_errors", "Containers whose stats could not be read in a poll.", registry=registry
        )
        self.deployments = Gauge(
            f"{PREFIX}_tracked_deployments", "Deployments currently tracked and exported.", registry=registry
        )
        self.asyncio_tasks = Gauge(
            f"{PREFIX}_asyncio_tasks",
            "asyncio tasks alive, counted every second: back to the same number when idle; growth is a leak.",
            registry=registry,
        )

    def event(self, action: str) -> None:
        base = action.split(":", 1)[0].strip()
        self.events.labels(base if _ACTION.fullmatch(base) else "other").inc()
