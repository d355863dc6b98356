"""The settings the pure core reads: label convention, rollout rules, retention.

They are declared here, not in ``watcher.config``, so that the domain imports nothing outside
itself; ``watcher.config`` composes them into the full ``Settings`` and loads them.
``setting()`` attaches the help text and bounds that the loader and the generated reference use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


def setting(default: Any, help: str, *, minimum: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A settings field with its help text, lower bound and allowed values."""
    return field(default=default, metadata={"help": help, "min": minimum, "choices": choices})


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
    dora_seconds: float = setting(
        40 * 86400.0,
        "seconds the DORA counts of a dropped deployment are kept, so one that comes back continues them",
        minimum=0,
    )
    max_deployments: int = setting(
        5000, "cap on tracked deployments; new ones beyond it are ignored and counted", minimum=1
    )


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
