"""The label convention: a container's labels → an ``Identity``, plus what was wrong with them.

Labels come from anyone who writes a compose file, so nothing here raises: every odd
value is cleaned or replaced by a documented fallback and reported as a ``LabelProblem``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass

from watcher.domain import text, times
from watcher.domain.analysis import Mode, Request
from watcher.domain.model import DeploymentKey, Identity, Status
from watcher.domain.settings import AnalysisSettings, LabelSettings

NAME = "deployment.name"
ENVIRONMENT = "deployment.environment"
VERSION = "deployment.version"
COMMIT = "deployment.commit"
TIMESTAMP = "deployment.timestamp"
STATUS = "deployment.status"
STABLE_SECONDS = "deployment.stable_seconds"
PROGRESS_DEADLINE = "deployment.progress_deadline_seconds"
COMMIT_TIME = "deployment.commit_time"
CHANGE_TYPE = "deployment.change_type"
ANALYSIS = "deployment.analysis"  # check names, comma-separated (the config's analysis.checks)
ANALYSIS_MODE = "deployment.analysis.mode"
ANALYSIS_ON_FAILURE = "deployment.analysis.on_failure"
OCI_VERSION = "org.opencontainers.image.version"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_CREATED = "org.opencontainers.image.created"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
# On a Swarm task's container, set by the engine; the service's own labels are not there.
SWARM_SERVICE_ID = "com.docker.swarm.service.id"
SWARM_SERVICE_NAME = "com.docker.swarm.service.name"

# The labels of the convention (README has a row for each).
ALL = (
    NAME, ENVIRONMENT, VERSION, COMMIT, TIMESTAMP, STATUS, STABLE_SECONDS, PROGRESS_DEADLINE, COMMIT_TIME,
    CHANGE_TYPE, ANALYSIS, ANALYSIS_MODE, ANALYSIS_ON_FAILURE,
)  # fmt: skip
# The labels a problem can be about: the label-error counter is pre-created for each.
UNKNOWN_VERSION = "unknown"  # no label, no image tag, no image id
PROBLEM_LABELS = (*ALL, OCI_VERSION, OCI_REVISION, OCI_CREATED)
# The values of deployment.change_type; a hotfix fixes a change that failed (DORA's rework).
CHANGE_TYPES = ("change", "hotfix")
ON_FAILURE = ("fail", "rollback")  # what a failed gate analysis does besides failing the rollout
NOT_A_SERVICE = "only a Swarm service can be rolled back by the watcher; the analysis only fails the rollout"


@dataclass(frozen=True, slots=True)
class LabelProblem:
    label: str
    message: str


@dataclass(frozen=True, slots=True)
class Parsed:
    identity: Identity | None  # None: not a deployment, or ignored for a problem
    problems: tuple[LabelProblem, ...] = ()


def is_tracked(labels: Mapping[str, str], *, settings: LabelSettings) -> bool:
    """Cheap pre-check on event attributes: could this container belong to a deployment?"""
    if NAME in labels or SWARM_SERVICE_ID in labels:
        return True  # a Swarm task: its service's deployment may claim it (domain.services)
    return settings.track_compose and COMPOSE_SERVICE in labels and COMPOSE_PROJECT in labels


def parse(
    labels: Mapping[str, str],
    *,
    image: str,
    image_id: str,
    created_at: float,
    now: float,
    settings: LabelSettings,
    analysis: AnalysisSettings | None = None,
    orchestrated: bool = False,
) -> Parsed:
    """Read the convention from a container's labels (its image's labels included), or a Swarm
    service's (``orchestrated``: it can be rolled back). ``analysis``: the checks deployment.analysis may
    name (None: names are not checked here; a rollout only ever runs configured ones)."""
    problems: list[LabelProblem] = []

    def clean(label: str) -> str | None:
        if label not in labels:
            return None
        return _clean(label, labels[label], settings.max_value_length, problems)

    name = clean(NAME)
    if name is None:
        if not is_tracked(labels, settings=settings):
            return Parsed(None)
        if COMPOSE_SERVICE in labels and COMPOSE_PROJECT in labels:
            project, service = labels[COMPOSE_PROJECT].strip(), labels[COMPOSE_SERVICE].strip()
            fallback = f"{project}/{service}" if project and service else ""
        elif settings.track_compose and SWARM_SERVICE_NAME in labels:
            fallback = labels[SWARM_SERVICE_NAME].strip()  # as the service's own watcher names it
        else:
            fallback = ""
        name = _clean(NAME, fallback, settings.max_value_length, problems) if fallback else ""
    # A Swarm task naming no deployment itself (its service's labels do, which a container does
    # not carry) keeps an empty name: its service's deployment claims it where this watcher
    # follows the service, else it is ignored (domain.services.task_seen).
    if not name and not (SWARM_SERVICE_ID in labels and NAME not in labels):
        problems.append(LabelProblem(NAME, "is empty; the container is ignored"))
        return Parsed(None, tuple(problems))

    environment = clean(ENVIRONMENT)
    if environment == "":
        problems.append(LabelProblem(ENVIRONMENT, f"is empty; using {settings.default_environment!r}"))
    environment = environment or settings.default_environment

    version = clean(VERSION)
    if version == "":
        problems.append(LabelProblem(VERSION, "is empty; falling back to the image version"))
    tag = _image_tag(image)
    version = (
        version
        or clean(OCI_VERSION)
        or (_clean(VERSION, tag, settings.max_value_length, problems) if tag else "")
        or _clean("image", _short_id(image_id), settings.max_value_length, [])
        or UNKNOWN_VERSION
    )

    commit = clean(COMMIT) or clean(OCI_REVISION) or ""

    return Parsed(
        Identity(
            key=DeploymentKey(name, environment),
            version=version,
            commit=commit,
            image=_clean("image", image, settings.max_value_length, []),
            created_at=created_at,
            deployed_at=_timestamp(
                labels.get(TIMESTAMP), created_at=created_at, now=now, settings=settings, problems=problems
            ),
            status_override=_status(labels.get(STATUS), problems),
            stable_seconds=_seconds(STABLE_SECONDS, labels.get(STABLE_SECONDS), problems),
            progress_deadline_seconds=_seconds(PROGRESS_DEADLINE, labels.get(PROGRESS_DEADLINE), problems),
            commit_time=_commit_time(labels, now=now, settings=settings, problems=problems),
            hotfix=_change_type(labels.get(CHANGE_TYPE), problems) == "hotfix",
            analysis=_analysis(labels, settings, analysis, orchestrated=orchestrated, problems=problems),
        ),
        tuple(problems),
    )


def _clean(label: str, raw: str, limit: int, problems: list[LabelProblem]) -> str:
    """Make a value safe and readable as a Prometheus label value."""
    cleaned = text.clean(raw, limit=limit)
    if cleaned.unencodable:
        problems.append(LabelProblem(label, "is not valid UTF-8; bad characters replaced by '?'"))
    if cleaned.unprintable:
        problems.append(LabelProblem(label, "contains control characters or line breaks; replaced by spaces"))
    if cleaned.length > limit:
        problems.append(LabelProblem(label, f"is {cleaned.length} characters long; truncated to {limit}"))
    value = cleaned.value
    if any(ch in value for ch in "\"'\\`"):
        problems.append(LabelProblem(label, "contains quotes or backslashes; kept, escaped in /metrics"))
    if not value.isascii():
        problems.append(LabelProblem(label, "contains non-ASCII characters; kept"))
    return value


def _image_tag(image: str) -> str:
    """The explicit tag of an image reference; '' for digests, bare names and ``latest``."""
    ref = image.split("@", 1)[0]
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not name:  # "host:5000/repo" has a port, not a tag
        return ""
    # `latest` says nothing about what runs: fall through to the image id.
    return "" if tag == "latest" else tag


def _short_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


_USING_CREATION_TIME = "using the creation time"  # a refused deployment.timestamp falls back to it


def _timestamp(
    raw: str | None, *, created_at: float, now: float, settings: LabelSettings, problems: list[LabelProblem]
) -> float:
    """When the deploy started, for the rollout's duration: the label when plausible, else the creation time."""
    if raw is None:
        return created_at
    value = _seconds(TIMESTAMP, raw, problems, meaning="unix seconds", instead=_USING_CREATION_TIME)
    if value is None:
        return created_at
    problem = times.implausible(value, now=now)
    if not problem and value < created_at - settings.max_timestamp_age_seconds:
        problem = (
            f"lies {created_at - value:.0f} s before the container was created, more than "
            f"labels.max_timestamp_age_seconds ({settings.max_timestamp_age_seconds:g} s)"
        )
    if problem:
        _refused(TIMESTAMP, raw, problem, problems, instead=_USING_CREATION_TIME)
        return created_at
    return value


def _commit_time(
    labels: Mapping[str, str], *, now: float, settings: LabelSettings, problems: list[LabelProblem]
) -> float | None:
    """deployment.commit_time, else (when enabled) the image's creation time; None when absent or refused."""
    if COMMIT_TIME in labels:
        return _moment(COMMIT_TIME, labels[COMMIT_TIME], now=now, problems=problems)
    if settings.image_created_commit_time and OCI_CREATED in labels:
        return _moment(OCI_CREATED, labels[OCI_CREATED], now=now, problems=problems)
    return None


def _moment(label: str, raw: str, *, now: float, problems: list[LabelProblem]) -> float | None:
    """Unix seconds or an RFC 3339 time with a zone, between 2000 and a day ahead of ``now``; else None and a problem."""
    written = raw.strip()
    value = _non_negative(written)
    if value is None:
        try:
            parsed = datetime.datetime.fromisoformat(written.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            _refused(label, raw, "is not unix seconds nor an RFC 3339 time", problems)
            return None
        value = parsed.timestamp()
    if times.in_the_future(value, now=now):
        _refused(label, raw, "lies in the future (milliseconds?)", problems)
        return None
    if value < times.EARLIEST:
        _refused(label, raw, "lies before the year 2000", problems)
        return None
    return value


def _change_type(raw: str | None, problems: list[LabelProblem]) -> str | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in CHANGE_TYPES:
        _refused(CHANGE_TYPE, raw, f"is not {' or '.join(CHANGE_TYPES)}", problems)
        return None
    return value


def _analysis(
    labels: Mapping[str, str], settings: LabelSettings, configured: AnalysisSettings | None, *, orchestrated: bool,
    problems: list[LabelProblem],
) -> Request | None:  # fmt: skip
    """The checks deployment.analysis asks for, its mode and what a failure does; None for none."""
    if ANALYSIS not in labels:
        return None
    written = _clean(ANALYSIS, labels[ANALYSIS], settings.max_value_length, problems)
    names = tuple(dict.fromkeys(n.strip() for n in written.split(",") if n.strip()))
    if configured is not None and configured.enabled:
        known = [c.name for c in configured.checks]
        for name in names:
            if name not in known:
                problem = (
                    f"names the unknown check {_quote(name)} (analysis.checks: {', '.join(known) or 'none'}); dropped"
                )
                problems.append(LabelProblem(ANALYSIS, problem))
        names = tuple(n for n in names if n in known)
    mode = Mode.GATE
    if ANALYSIS_MODE in labels:
        raw = labels[ANALYSIS_MODE]
        try:
            mode = Mode(raw.strip().lower())
        except ValueError:
            modes = " or ".join(m.value for m in Mode)
            problems.append(LabelProblem(ANALYSIS_MODE, f"{_quote(raw)} is not {modes}; using gate"))
    rollback = False
    if ANALYSIS_ON_FAILURE in labels:
        raw = labels[ANALYSIS_ON_FAILURE]
        value = raw.strip().lower()
        if value not in ON_FAILURE:
            problems.append(
                LabelProblem(ANALYSIS_ON_FAILURE, f"{_quote(raw)} is not {' or '.join(ON_FAILURE)}; ignored")
            )
        elif value == "rollback" and not orchestrated:
            problems.append(LabelProblem(ANALYSIS_ON_FAILURE, f"rollback refused: {NOT_A_SERVICE}"))
        else:
            rollback = value == "rollback"
    return Request(checks=names, mode=mode, rollback=rollback) if names else None


def _status(raw: str | None, problems: list[LabelProblem]) -> Status | None:
    if raw is None:
        return None
    try:
        return Status.from_text(raw.strip().lower().replace("-", "_"))  # in-progress, IN_PROGRESS too
    except ValueError:
        _refused(STATUS, raw, "is not in_progress, success or failed", problems)
        return None


def _seconds(
    label: str,
    raw: str | None,
    problems: list[LabelProblem],
    *,
    meaning: str = "a number of seconds",
    instead: str = "using the default",
) -> float | None:
    """A non-negative number, or None: the label is absent, or (a problem says so) it is not ``meaning``."""
    if raw is None:
        return None
    value = _non_negative(raw)
    if value is None:
        _refused(label, raw, f"is not {meaning}", problems, instead=instead)
    return value


def _non_negative(raw: str) -> float | None:
    """A finite, non-negative number, or None."""
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _refused(label: str, raw: str, why: str, problems: list[LabelProblem], *, instead: str = "ignored") -> None:
    """A value not used: the problem quotes it, says why, and what is done ``instead``."""
    problems.append(LabelProblem(label, f"{_quote(raw)} {why}; {instead}"))


def _quote(raw: str) -> str:
    """A bounded, one-line rendering of a bad value for log messages."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
