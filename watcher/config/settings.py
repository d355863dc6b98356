"""Settings: typed dataclasses with defaults, one section each; the field help is the reference.

The sections the pure core reads are declared in ``watcher.domain.settings``; loading (YAML file,
environment, flags) is ``watcher.config.loading``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from watcher.domain.settings import AnalysisSettings, LabelSettings, RetentionSettings, RolloutSettings, setting

ENV_PREFIX = "WATCHER_"
CONFIG_FILE_ENV = "WATCHER_CONFIG_FILE"
API_TOKEN_ENV = "WATCHER_API_TOKEN"  # a secret: read from the environment only, never a setting


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    listen_address: str = setting(
        ":9102", "host:port to serve /metrics, /health and /ready on (empty host: all interfaces)"
    )
    config_file: str = setting(
        "", "web config file (Prometheus exporters' format) for TLS and basic auth; empty: plain HTTP, no auth"
    )
    max_stream_clients: int = setting(
        256,
        "event stream (/api/v1/events) clients connected at once; more are refused with 503 and Retry-After. "
        "Each holds a file descriptor: keep it well below the descriptor limit (ulimit -n, often 1024)",
        minimum=1,
    )
    max_stream_clients_per_address: int = setting(
        32,
        "event stream clients connected at once from one client address (behind a reverse proxy, all "
        "clients share its address); more are refused with 503 and Retry-After",
        minimum=1,
    )
    allowed_hosts: str = setting(
        "",
        "comma-separated host names a browser may use to reach the watcher, besides IP addresses and "
        "localhost, e.g. watcher.example.com; a request from a browser (a Mozilla/ User-Agent, Accept-Language, "
        "Sec-Fetch-*, Origin, Referer) naming another Host is refused with 403, against DNS rebinding. Other "
        "clients (Prometheus, curl, the CLI) are never refused for their Host",
    )
    grafana_url: str = setting(
        "",
        "a Grafana dashboard to link from each deployment's page on the board, {deployment} and {environment} "
        "filled in, e.g. https://grafana.example.com/d/abc/app?var-app={deployment}&var-env={environment}; "
        "empty: no link",
    )


@dataclass(frozen=True, kw_only=True)
class DockerSettings:
    host: str = setting("", "Docker endpoint; empty follows DOCKER_HOST, then the local socket")
    backoff_initial_seconds: float = setting(0.5, "first reconnect delay, in seconds", minimum=0.01)
    backoff_max_seconds: float = setting(
        30.0, "longest reconnect delay, in seconds (each delay is jittered between half and all of it)", minimum=0.01
    )
    silence_seconds: float = setting(
        60.0,
        "after this many seconds without an event, check the daemon; no answer, or events the stream"
        " did not deliver, mean reconnect",
        minimum=1,
    )
    resync_seconds: float = setting(
        600.0, "relist all containers this often, in seconds, as a safety net (0: never)", minimum=0
    )
    request_timeout_seconds: float = setting(
        10.0, "timeout of one API request (list, inspect, ping), in seconds", minimum=0.1
    )
    inspect_concurrency: int = setting(16, "containers inspected at once (during a resync, and for events)", minimum=1)


@dataclass(frozen=True, kw_only=True)
class SwarmSettings:
    services: str = setting(
        "auto",
        "follow Swarm services: auto when the engine is a Swarm manager, on (wait until it is one), off",
        choices=("auto", "on", "off"),
    )
    poll_seconds: float = setting(
        2.0, "seconds between two reads of the services' tasks while a rollout is in progress", minimum=0.1
    )
    resync_seconds: float = setting(
        300.0, "seconds between two full relists of the services (also at every reconnect)", minimum=1
    )
    leader_check_seconds: float = setting(
        10.0,
        "seconds between two checks whether this manager is the Swarm leader (the one that exports services)",
        minimum=0.1,
    )


@dataclass(frozen=True, kw_only=True)
class StatsSettings:
    enabled: bool = setting(True, "poll CPU and memory of running tracked containers")
    interval_seconds: float = setting(15.0, "seconds between two stats polls", minimum=1)
    concurrency: int = setting(8, "stats API requests (and cgroup-parent inspects) in flight at once", minimum=1)
    source: str = setting(
        "auto",
        "where CPU and memory come from: cgroup files (microseconds a container; needs the host's cgroup tree), "
        "the Docker stats API (about a second a container), or auto: cgroup files when they read for the "
        "containers, else the API",
        choices=("auto", "cgroup", "api"),
    )
    cgroup_root: str = setting(
        "/sys/fs/cgroup",
        "absolute path of the host's cgroup tree, e.g. /host/sys/fs/cgroup when mounted into a container",
    )


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    token_file: str = setting(
        "", f"file holding the bearer token of the CI/CD API (or set {API_TOKEN_ENV}); no token: the API is off"
    )
    max_body_bytes: int = setting(16384, "largest request body the API accepts, in bytes", minimum=256)
    retention_seconds: float = setting(
        2592000.0, "seconds a deployment with no containers stays exported after its last API report", minimum=0
    )


@dataclass(frozen=True, kw_only=True)
class StorageSettings:
    directory: str = setting(
        "auto",
        "directory of the state file (state.json), created when missing. auto: /var/lib/deployment-watcher "
        "when it is writable or can be created, else $XDG_STATE_HOME/deployment-watcher (by default "
        "~/.local/state/deployment-watcher); none or empty: keep no state across restarts; any other value "
        "is that directory (a relative path is relative to the working directory)",
    )
    debounce_seconds: float = setting(
        1.0,
        "after a change, wait this many seconds, gathering further changes, before saving the state file",
        minimum=0,
    )
    max_file_bytes: int = setting(
        256 * 1024 * 1024,
        "largest state file loaded at start-up, in bytes; a larger one is moved aside unread, as an unusable "
        "file is (reading it could exhaust the memory)",
        minimum=1024,
    )


@dataclass(frozen=True, kw_only=True)
class ExpositionSettings:
    min_interval_seconds: float = setting(
        1.0,
        "after a change of state, /metrics is re-rendered once this many seconds after the previous rendering "
        "at the earliest; changes in between are coalesced into one rendering",
        minimum=0,
    )
    max_staleness_seconds: float = setting(
        5.0,
        "the watcher's own metrics in /metrics (process, runtime, counters) are re-read at least this often, "
        "in seconds; deployment series follow every change of state",
        minimum=0.1,
    )
    dora_histograms: str = setting(
        "environment",
        "deployment_lead_time_seconds and deployment_recovery_seconds: one histogram per environment (summed over "
        "its deployments; no deployment label) or one per deployment (10 more series each); docs/metrics.md",
        choices=("environment", "deployment"),
    )
    version_info_versions: int = setting(
        2,
        "deployment_version_info shows this many of the newest versions of retention.history_versions",
        minimum=1,
    )


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    shutdown_timeout_seconds: float = setting(
        8.0,
        "after SIGTERM, SIGINT or SIGHUP, seconds the watcher may take to stop (final state file save, open HTTP "
        "requests); beyond it, it logs what is still pending and exits with code 1. Below docker stop's "
        "10 s grace, so that report is written before Docker kills the process",
        minimum=2,
    )


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    level: str = setting("info", "log level", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True, kw_only=True)
class Settings:
    web: WebSettings = field(default_factory=WebSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    labels: LabelSettings = field(default_factory=LabelSettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    exposition: ExpositionSettings = field(default_factory=ExpositionSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
