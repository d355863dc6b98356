"""Loading the settings: defaults, the YAML file, environment variables, flags; every problem at once.

Precedence, lowest first: defaults, the YAML file, environment variables
(``WATCHER_<SECTION>_<FIELD>``), command-line flags (``--<section>.<field>``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from watcher.config import checks, webconfig, yamlfile
from watcher.config.problems import ConfigError
from watcher.config.settings import API_TOKEN_ENV, CONFIG_FILE_ENV, ENV_PREFIX, Settings


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
            if f.metadata["yaml_only"]:
                continue  # no flag nor variable: read by its own reader (analysis.checks)
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
    unreadable: list[str] = []
    data = yamlfile.read(path, unreadable)
    problems.extend(f"config file {path}: {problem}" for problem in unreadable)
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
            if f"{section}.{name}" not in known and f"{section}.{name}" != checks.PATH:
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

    analysis_body = document.get("analysis")
    if isinstance(analysis_body, Mapping) and "checks" in analysis_body:
        values.setdefault("analysis", {})["checks"] = checks.read(analysis_body["checks"], problems)
    try:
        settings = _build(values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - _coerce guards types
        problems.append(str(exc))
        settings = Settings()
    problems.extend(_cross_checks(settings))
    if problems:
        raise ConfigError(problems)
    if settings.analysis.enabled and not settings.analysis.host:  # {{host}}: this machine's
        settings = dataclasses.replace(
            settings, analysis=dataclasses.replace(settings.analysis, host=socket.gethostname())
        )
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
    for name in settings.web.allowed_hosts.split(","):
        if not re.fullmatch(r"\s*([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?)?\s*", name):
            problems.append(f"web.allowed_hosts: {name.strip()!r} is not a host name (no scheme, port or path: "
                            "the port does not matter)")  # fmt: skip
    grafana = settings.web.grafana_url
    if grafana and not re.match(r"https?://[^/?#\s]+", grafana):
        problems.append(f"web.grafana_url must be an http:// or https:// URL, got {grafana!r}")
    url = settings.analysis.prometheus_url
    if url and not re.match(r"https?://[^/?#\s]+", url):
        problems.append(f"analysis.prometheus_url must be an http:// or https:// URL, got {url!r}")
    if settings.analysis.password_file and not settings.analysis.username:
        problems.append("analysis.password_file needs analysis.username (basic auth)")
    for name in ("password_file", "bearer_token_file", "ca_file"):
        path = getattr(settings.analysis, name)
        if path and not os.access(path, os.R_OK):
            problems.append(f"analysis.{name}: cannot read {path}")
    if settings.analysis.password_file and settings.analysis.bearer_token_file:
        problems.append("analysis.password_file and analysis.bearer_token_file are both set; set one of them")
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
    document = dataclasses.asdict(settings)
    document["analysis"]["checks"] = [dict(c) for c in document["analysis"]["checks"]]  # YAML has no tuples
    return yaml.safe_dump(document, sort_keys=False)
