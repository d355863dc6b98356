"""Settings: typed dataclasses with defaults, loaded from YAML, environment and flags.

Precedence, lowest first: defaults, the YAML file, environment variables
(``WATCHER_<SECTION>_<FIELD>``), command-line flags (``--<section>.<field>``).
Every error is collected and reported at once, so a broken config is fixed in one go.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from watcher import webconfig

ENV_PREFIX = "WATCHER_"
CONFIG_FILE_ENV = "WATCHER_CONFIG_FILE"
API_TOKEN_ENV = "WATCHER_API_TOKEN"  # a secret: read from the environment only, never a setting


def _opt(default: Any, help: str, *, minimum: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "min": minimum, "choices": choices})


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    listen_address: str = _opt(
        ":9102", "host:port to serve /metrics, /health and /ready on (empty host: all interfaces)"
    )
    config_file: str = _opt(
        "", "web config file (Prometheus exporters' format) for TLS and basic auth; empty: plain HTTP, no auth"
    )


@dataclass(frozen=True, kw_only=True)
class DockerSettings:
    host: str = _opt("", "Docker endpoint; empty follows DOCKER_HOST, then the local socket")
    backoff_initial_seconds: float = _opt(0.5, "first reconnect delay, in seconds", minimum=0.01)
    backoff_max_seconds: float = _opt(
        30.0, "longest reconnect delay, in seconds (each delay is jittered between half and all of it)", minimum=0.01
    )
    silence_seconds: float = _opt(
        60.0,
        "after this many seconds without an event, check the daemon; no answer, or events the stream"
        " did not deliver, mean reconnect",
        minimum=1,
    )
    resync_seconds: float = _opt(
        600.0, "relist all containers this often, in seconds, as a safety net (0: never)", minimum=0
    )
    request_timeout_seconds: float = _opt(
        10.0, "timeout of one API request (list, inspect, ping), in seconds", minimum=0.1
    )
    inspect_concurrency: int = _opt(16, "containers inspected at once (during a resync, and for events)", minimum=1)


@dataclass(frozen=True, kw_only=True)
class LabelSettings:
    default_environment: str = _opt("production", "environment of containers without deployment.environment")
    track_compose: bool = _opt(False, "also track compose services without deployment.name, named <project>/<service>")
    max_value_length: int = _opt(128, "label values longer than this many characters are truncated", minimum=8)


@dataclass(frozen=True, kw_only=True)
class RolloutSettings:
    stable_seconds: float = _opt(
        10.0, "seconds a container without HEALTHCHECK must run to count as healthy", minimum=0
    )
    progress_deadline_seconds: float = _opt(
        600.0, "seconds a rollout may stay in progress before it is failed", minimum=1
    )
    restart_limit: int = _opt(
        3, "restarts of one container (Docker's RestartCount) that make a restart loop", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class RetentionSettings:
    gone_seconds: float = _opt(3600.0, "seconds a deployment with no containers left stays exported", minimum=0)
    history_versions: int = _opt(10, "distinct versions kept per deployment for deployment_version_info", minimum=1)
    max_deployments: int = _opt(
        5000, "cap on tracked deployments; new ones beyond it are ignored and counted", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    enabled: bool = _opt(True, "poll CPU and memory of running tracked containers")
    interval_seconds: float = _opt(15.0, "seconds between two stats polls", minimum=1)
    concurrency: int = _opt(8, "stats API requests (and cgroup-parent inspects) in flight at once", minimum=1)
    source: str = _opt(
        "auto",
        "where CPU and memory come from: cgroup files (microseconds a container; needs the host's cgroup tree), "
        "the Docker stats API (about a second a container), or auto: cgroup files when they read for the "
        "containers, else the API",
        choices=("auto", "cgroup", "api"),
    )
    cgroup_root: str = _opt(
        "/sys/fs/cgroup",
        "absolute path of the host's cgroup tree, e.g. /host/sys/fs/cgroup when mounted into a container",
    )


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    token_file: str = _opt(
        "", f"file holding the bearer token of the CI/CD API (or set {API_TOKEN_ENV}); no token: the API is off"
    )
    max_body_bytes: int = _opt(16384, "largest request body the API accepts, in bytes", minimum=256)
    retention_seconds: float = _opt(
        2592000.0, "seconds a deployment with no containers stays exported after its last API report", minimum=0
    )


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    directory: str = _opt(
        "data",
        "directory of the state file (state.json), created when missing; a relative path is relative to "
        "the working directory; empty: keep no state across restarts",
    )
    debounce_seconds: float = _opt(
        1.0,
        "after a change, wait this many seconds, gathering further changes, before saving the state file",
        minimum=0,
    )


@dataclass(frozen=True, kw_only=True)
class ExpositionSettings:
    min_interval_seconds: float = _opt(
        1.0,
        "after a change of state, /metrics is re-rendered once this many seconds after the previous rendering "
        "at the earliest; changes in between are coalesced into one rendering",
        minimum=0,
    )
    max_staleness_seconds: float = _opt(
        5.0,
        "the watcher's own metrics in /metrics (process, runtime, counters) are re-read at least this often, "
        "in seconds; deployment series follow every change of state",
        minimum=0.1,
    )


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    shutdown_timeout_seconds: float = _opt(
        8.0,
        "after SIGTERM or SIGINT, seconds the watcher may take to stop (final state file save, open HTTP "
        "requests); beyond it, it logs what is still pending and exits with code 1. Below docker stop's "
        "10 s grace, so that report is written before Docker kills the process",
        minimum=2,
    )


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    level: str = _opt("info", "log level", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, kw_only=True)
class Settings:
    web: WebSettings = field(default_factory=WebSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    exposition: ExpositionSettings = field(default_factory=ExpositionSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    log: LogSettings = field(default_factory=LogSettings)


class ConfigError(Exception):
    """All problems found in one configuration, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Option:
    """One setting, addressed as ``section.field``."""

    section: str
    name: str
    type: type
    default: Any
    help: str
    minimum: float | None
    choices: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str:
        return f"--{self.section}.{self.name.replace('_', '-')}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section}_{self.name}".upper()


def options() -> Iterator[Option]:
    """Every setting, in declaration order."""
    hints = typing.get_type_hints(Settings)
    for section in dataclasses.fields(Settings):
        section_cls = hints[section.name]
        section_hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            yield Option(
                section=section.name,
                name=f.name,
                type=section_hints[f.name],
                default=f.default,
                help=f.metadata["help"],
                minimum=f.metadata["min"],
                choices=f.metadata["choices"],
            )


def _coerce(option: Option, raw: object) -> tuple[Any, str | None]:
    """Turn a YAML, environment or flag value into the option's type, or say why not."""
    kind = option.type
    if kind is bool:
        if isinstance(raw, bool):
            return raw, None
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True, None
        if text in ("0", "false", "no", "off"):
            return False, None
        return None, f"{option.path}: expected true or false, got {raw!r}"
    if kind is int or kind is float:
        if isinstance(raw, bool):
            return None, f"{option.path}: expected a number, got {raw!r}"
        try:
            value: float = float(str(raw).strip()) if kind is float else int(str(raw).strip())
        except ValueError:
            return None, f"{option.path}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return None, f"{option.path}: expected a finite number, got {raw!r}"
        if option.minimum is not None and value < option.minimum:
            return None, f"{option.path}: must be at least {option.minimum:g}, got {raw!r}"
        return value, None
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        return None, f"{option.path}: expected a string, got {raw!r}"
    text = str(raw).strip()
    if option.choices and text.lower() not in option.choices:
        return None, f"{option.path}: must be one of {', '.join(option.choices)}, got {raw!r}"
    return (text.lower() if option.choices else text), None


def _read_file(path: str, problems: list[str]) -> Mapping[str, object]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        problems.append(f"config file {path}: {exc.strerror or exc}")
        return {}
    except yaml.YAMLError as exc:
        problems.append(f"config file {path}: not valid YAML: {exc}".replace("\n", " "))
        return {}
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        problems.append(f"config file {path}: the top level must be a mapping of sections")
        return {}
    return data


def load(
    *,
    file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from a YAML file, the environment and flags (``section.field`` → text).

    Raises ConfigError listing every problem found.
    """
    environ = os.environ if environ is None else environ
    flags = flags or {}
    problems: list[str] = []
    file = file or environ.get(CONFIG_FILE_ENV) or None
    document = _read_file(file, problems) if file else {}

    known = {opt.path: opt for opt in options()}
    sections = {opt.section for opt in known.values()}
    for section, body in document.items():
        if section not in sections:
            problems.append(f"config file: unknown section {section}")
            continue
        if body is None:  # a section whose keys are all commented out
            continue
        if not isinstance(body, Mapping):
            problems.append(f"config file: section {section!r} must be a mapping")
            continue
        for name in body:
            if f"{section}.{name}" not in known:
                problems.append(f"config file: unknown setting {section}.{name}")
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in {CONFIG_FILE_ENV, API_TOKEN_ENV} | {
            o.env for o in known.values()
        }:
            problems.append(f"environment: unknown variable {name}")
    for path in flags:
        if path not in known:
            problems.append(f"flags: unknown setting {path}")

    values: dict[str, dict[str, Any]] = {}
    for option in known.values():
        sources: list[tuple[str, object]] = []
        body = document.get(option.section)
        if isinstance(body, Mapping) and option.name in body:
            sources.append(("config file", body[option.name]))
        if option.env in environ:
            sources.append((f"environment {option.env}", environ[option.env]))
        if option.path in flags:
            sources.append((f"flag {option.flag}", flags[option.path]))
        if not sources:
            continue
        where, raw = sources[-1]
        value, problem = _coerce(option, raw)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            values.setdefault(option.section, {})[option.name] = value

    try:
        settings = _build(values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - _coerce guards types
        problems.append(str(exc))
        settings = Settings()
    problems.extend(_cross_checks(settings))
    if problems:
        raise ConfigError(problems)
    return settings


def _build(values: Mapping[str, Mapping[str, Any]]) -> Settings:
    hints = typing.get_type_hints(Settings)
    sections = {name: hints[name](**fields) for name, fields in values.items()}
    return Settings(**sections)


def _cross_checks(settings: Settings) -> list[str]:
    problems = []
    if settings.docker.backoff_max_seconds < settings.docker.backoff_initial_seconds:
        problems.append("docker.backoff_max_seconds must not be below docker.backoff_initial_seconds")
    try:
        parse_listen_address(settings.web.listen_address)
    except ValueError as exc:
        problems.append(f"web.listen_address: {exc}")
    if not settings.stats.cgroup_root.startswith("/"):
        problems.append(f"stats.cgroup_root must be an absolute path, got {settings.stats.cgroup_root!r}")
    if settings.web.config_file:
        try:
            webconfig.load(settings.web.config_file)
        except webconfig.WebConfigError as exc:
            problems.extend(f"web.config_file: {problem}" for problem in exc.problems)
    if not settings.labels.default_environment:
        problems.append("labels.default_environment must not be empty")
    return problems


def parse_listen_address(address: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` → (host, port); an empty host means all interfaces."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise ValueError(f"expected host:port, got {address!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port must be a number, got {address!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, port


def as_yaml(settings: Settings) -> str:
    """The effective settings as a YAML document (for ``--print-config`` and docs)."""
    return yaml.safe_dump(dataclasses.asdict(settings), sort_keys=False)
