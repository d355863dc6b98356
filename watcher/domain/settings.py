"""The settings the pure core reads: label convention, rollout rules, retention.

They are declared here, not in ``watcher.config``, so that the domain imports nothing outside
itself; ``watcher.config`` composes them into the full ``Settings`` and loads them.
``setting()`` attaches the help text and bounds that the loader and the generated reference use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from watcher.domain.analysis import Check


def setting(
    default: Any, help: str, *, minimum: float | None = None, choices: tuple[str, ...] = (), yaml_only: bool = False
) -> Any:
    """A settings field with its help text, lower bound and allowed values; ``yaml_only``: a structure
    the config file alone can hold (no flag, no environment variable)."""
    return field(default=default, metadata={"help": help, "min": minimum, "choices": choices, "yaml_only": yaml_only})


@dataclass(frozen=True, kw_only=True)
class LabelSettings:
    default_environment: str = setting("production", "environment of containers without deployment.environment")
    track_compose: bool = setting(
        False, "also track compose services without deployment.name, named <project>/<service>"
    )
    max_value_length: int = setting(128, "label values longer than this many characters are truncated", minimum=8)
    # A CI pipeline stamps the time it began, minutes before it creates the container; an hour
    # and more is more likely a value reused from an old compose file or baked into an image.
    max_timestamp_age_seconds: float = setting(
        3600.0,
        "a deployment.timestamp further than this before the container's creation is ignored (with a warning) "
        "and the creation time used",
        minimum=0,
    )
    image_created_commit_time: bool = setting(
        False,
        "take the commit time from org.opencontainers.image.created when deployment.commit_time is absent"
        " (the commit time only for builds with SOURCE_DATE_EPOCH)",
    )


@dataclass(frozen=True, kw_only=True)
class RolloutSettings:
    stable_seconds: float = setting(
        10.0, "seconds a container without HEALTHCHECK must run to count as healthy", minimum=0
    )
    progress_deadline_seconds: float = setting(
        600.0, "seconds a rollout may stay in progress before it is failed", minimum=1
    )
    restart_limit: int = setting(
        3, "restarts of one container (Docker's RestartCount) that make a restart loop", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    gone_seconds: float = setting(3600.0, "seconds a deployment with no containers left stays exported", minimum=0)
    history_versions: int = setting(10, "distinct versions kept per deployment for deployment_version_info", minimum=1)
    # Enough for a day of frequent deploys; each costs ~250 bytes of state file and memory per deployment.
    revisions: int = setting(
        20, "rollouts (revisions) kept per deployment for GET /api/v1/rollouts and rollout history", minimum=1
    )
    dora_seconds: float = setting(
        40 * 86400.0,
        "seconds the DORA counts of a dropped deployment are kept, so one that comes back continues them",
        minimum=0,
    )
    max_deployments: int = setting(
        5000, "cap on tracked deployments; new ones beyond it are ignored and counted", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class AnalysisSettings:
    prometheus_url: str = setting(
        "", "Prometheus to query for rollout analysis, e.g. http://prometheus:9090; empty: analysis off"
    )
    interval_seconds: float = setting(30.0, "seconds between two measurements of a check", minimum=1)
    window_seconds: float = setting(
        300.0, "seconds the checks run after the rollout's own verdict is success", minimum=1
    )
    failure_limit: int = setting(2, "failed measurements (of any check) that fail the analysis", minimum=1)
    allow_rollback: bool = setting(
        False,
        "roll back a Swarm service labelled deployment.analysis.on_failure=rollback when its gate analysis fails "
        "(needs POST access to /services)",
    )
    timeout_seconds: float = setting(10.0, "timeout of one Prometheus query, in seconds", minimum=0.1)
    host: str = setting("", "the value of {{host}} in queries; empty: this machine's host name")
    username: str = setting("", "user name for basic auth to Prometheus (with password_file)")
    password_file: str = setting("", "file holding the basic auth password for Prometheus")
    bearer_token_file: str = setting("", "file holding a bearer token for Prometheus")
    ca_file: str = setting("", "CA certificate file (PEM) to verify Prometheus's TLS certificate")
    checks: tuple[Check, ...] = setting(
        (),
        "the checks a deployment may name in deployment.analysis, each with name, query and min, max and/or "
        "max_increase (config file only)",
        yaml_only=True,
    )

    @property
    def enabled(self) -> bool:
        return bool(self.prometheus_url)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


class ReportRetention(Protocol):
    @property
    def retention_seconds(self) -> float: ...


class RuleSettings(Protocol):
    """What the state machine reads of the settings (``watcher.config.Settings`` is one)."""

    @property
    def labels(self) -> LabelSettings: ...

    @property
    def rollout(self) -> RolloutSettings: ...

    @property
    def retention(self) -> RetentionSettings: ...

    @property
    def api(self) -> ReportRetention: ...

    @property
    def analysis(self) -> AnalysisSettings: ...
