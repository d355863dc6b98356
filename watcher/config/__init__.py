"""The watcher's configuration: settings dataclasses and their loading."""

from watcher.config.loading import Option, as_yaml, load, options, parse_listen_address
from watcher.config.problems import ConfigError
from watcher.config.settings import (
    API_TOKEN_ENV,
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    ApiSettings,
    DockerSettings,
    ExpositionSettings,
    LogSettings,
    ServiceSettings,
    Settings,
    StatsSettings,
    StorageSettings,
    SwarmSettings,
    WebSettings,
)
from watcher.domain.settings import AnalysisSettings, LabelSettings, RetentionSettings, RolloutSettings

__all__ = [
    "API_TOKEN_ENV",
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "AnalysisSettings",
    "ApiSettings",
    "ConfigError",
    "DockerSettings",
    "ExpositionSettings",
    "LabelSettings",
    "LogSettings",
    "Option",
    "RetentionSettings",
    "RolloutSettings",
    "ServiceSettings",
    "Settings",
    "StatsSettings",
    "StorageSettings",
    "SwarmSettings",
    "WebSettings",
    "as_yaml",
    "load",
    "options",
    "parse_listen_address",
]
