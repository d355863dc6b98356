"""Unit tests of config: table-driven, plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.builders import UNREADABLE
from watcher import cli, config
from watcher.config import ConfigError, Settings, parse_listen_address


def write(tmp_path: Path, text: str, name: str = "watcher.yml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(**kwargs)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def assert_each_once(problems: list[str], needles: list[str]) -> None:
    for needle in needles:
        assert sum(needle in problem for problem in problems) == 1, (needle, problems)


# --- sources and precedence -----------------------------------------------------------


def test_defaults_when_nothing_given() -> None:
    """No file, no environment, no flags: the declared defaults."""
    settings = config.load(environ={})
    assert settings == Settings()
    assert settings.web.listen_address == ":9102"
    assert settings.rollout.stable_seconds == 10.0
    assert settings.labels.track_compose is False
    assert settings.log.level == "info"


def test_empty_flags_and_file_none() -> None:
    """Explicit empty inputs are the same as none."""
    assert config.load(file=None, environ={}, flags={}) == Settings()


def test_yaml_file_sets_values(tmp_path: Path) -> None:
    """Values in the YAML file override the defaults, coerced to the declared types."""
    path = write(
        tmp_path,
        """
web:
  listen_address: "127.0.0.1:9200"
rollout:
  stable_seconds: 20
  restart_limit: 5
labels:
  track_compose: true
  default_environment: staging
log:
  level: DEBUG
""",
    )
    settings = config.load(file=path, environ={})
    assert settings.web.listen_address == "127.0.0.1:9200"
    assert settings.rollout.stable_seconds == 20.0
    assert isinstance(settings.rollout.stable_seconds, float)
    assert settings.rollout.restart_limit == 5
    assert isinstance(settings.rollout.restart_limit, int)
    assert settings.rollout.progress_deadline_seconds == 600.0
    assert settings.labels.track_compose is True
    assert settings.labels.default_environment == "staging"
    assert settings.log.level == "debug"


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    """An empty YAML document is no settings, not an error."""
    assert config.load(file=write(tmp_path, text), environ={}) == Settings()


def test_environment_overrides_file(tmp_path: Path) -> None:
    """WATCHER_<SECTION>_<FIELD> wins over the file; other file values stay."""
    path = write(tmp_path, "rollout:\n  stable_seconds: 20\n  restart_limit: 5\n")
    settings = config.load(file=path, environ={"WATCHER_ROLLOUT_STABLE_SECONDS": "5"})
    assert settings.rollout.stable_seconds == 5.0
    assert settings.rollout.restart_limit == 5


def test_flags_override_environment(tmp_path: Path) -> None:
    """Flags win over the environment and the file."""
    path = write(tmp_path, "rollout:\n  stable_seconds: 20\n")
    settings = config.load(
        file=path,
        environ={"WATCHER_ROLLOUT_STABLE_SECONDS": "5"},
        flags={"rollout.stable_seconds": "7"},
    )
    assert settings.rollout.stable_seconds == 7.0


def test_only_the_winning_source_is_validated(tmp_path: Path) -> None:
    """A bad value overridden by a higher-precedence source is not an error."""
    path = write(tmp_path, "rollout:\n  stable_seconds: -20\n")
    settings = config.load(
        file=path, environ={"WATCHER_ROLLOUT_STABLE_SECONDS": "bad"}, flags={"rollout.stable_seconds": "7"}
    )
    assert settings.rollout.stable_seconds == 7.0


def test_config_file_from_environment(tmp_path: Path) -> None:
    """WATCHER_CONFIG_FILE selects the file and is not an unknown variable."""
    path = write(tmp_path, "stats:\n  enabled: false\n  interval_seconds: 30\n")
    settings = config.load(environ={"WATCHER_CONFIG_FILE": path})
    assert settings.stats.enabled is False
    assert settings.stats.interval_seconds == 30.0


def test_explicit_file_wins_over_config_file_variable(tmp_path: Path) -> None:
    """The file argument (the --config.file flag) wins over WATCHER_CONFIG_FILE."""
    chosen = write(tmp_path, "rollout:\n  restart_limit: 9\n", "chosen.yml")
    other = write(tmp_path, "rollout:\n  restart_limit: 4\n", "other.yml")
    settings = config.load(file=chosen, environ={"WATCHER_CONFIG_FILE": other})
    assert settings.rollout.restart_limit == 9


def test_unrelated_environment_is_ignored() -> None:
    """Variables without the WATCHER_ prefix are none of our business."""
    assert config.load(environ={"HOME": "/root", "DOCKER_HOST": "unix:///x", "WATCHERFOO": "1"}) == Settings()


# --- coercion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        ("labels.track_compose", "yes", True),
        ("labels.track_compose", "ON", True),
        ("labels.track_compose", "1", True),
        ("labels.track_compose", "false", False),
        ("labels.track_compose", " off ", False),
        ("labels.track_compose", "0", False),
        ("log.level", "WARNING", "warning"),
        ("log.level", " error ", "error"),
        ("docker.inspect_concurrency", "4", 4),
        ("docker.host", " tcp://docker:2375 ", "tcp://docker:2375"),
        ("rollout.stable_seconds", "0", 0.0),
        ("rollout.stable_seconds", "2.5", 2.5),
        ("docker.resync_seconds", "0", 0.0),
        ("labels.max_value_length", "8", 8),
        ("stats.source", " CGROUP ", "cgroup"),
        ("stats.cgroup_root", "/host/sys/fs/cgroup", "/host/sys/fs/cgroup"),
    ],
)
def test_flag_values_are_coerced(path: str, raw: str, expected: object) -> None:
    """Text from flags becomes the option's type."""
    settings = config.load(environ={}, flags={path: raw})
    section, name = path.split(".")
    value = getattr(getattr(settings, section), name)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("path", "raw", "needle"),
    [
        ("labels.track_compose", "maybe", "labels.track_compose: expected true or false"),
        ("rollout.stable_seconds", "abc", "rollout.stable_seconds: expected a number"),
        ("rollout.stable_seconds", "-1", "rollout.stable_seconds: must be at least 0"),
        ("rollout.stable_seconds", "nan", "rollout.stable_seconds: expected a finite number"),
        ("rollout.stable_seconds", "inf", "rollout.stable_seconds: expected a finite number"),
        ("rollout.restart_limit", "1.5", "rollout.restart_limit: expected an integer"),
        ("rollout.restart_limit", "0", "rollout.restart_limit: must be at least 1"),
        ("labels.max_value_length", "4", "labels.max_value_length: must be at least 8"),
        ("log.level", "verbose", "log.level: must be one of debug, info, warning, error"),
        ("rollout.bogus", "1", "flags: unknown setting rollout.bogus"),
        ("labels.default_environment", "", "labels.default_environment must not be empty"),
        ("docker.backoff_max_seconds", "0.1", "backoff_max_seconds must not be below"),
        ("stats.source", "files", "stats.source: must be one of auto, cgroup, api"),
        ("stats.cgroup_root", "sys/fs/cgroup", "stats.cgroup_root must be an absolute path"),
    ],
)
def test_bad_flag_values(path: str, raw: str, needle: str) -> None:
    """A bad flag value is one problem that names the setting."""
    problems = problems_of(environ={}, flags={path: raw})
    assert len(problems) == 1, problems
    assert needle in problems[0]


def test_problem_names_its_source(tmp_path: Path) -> None:
    """Each value problem says where the value came from."""
    assert problems_of(environ={}, flags={"rollout.restart_limit": "x"})[0].startswith("flag --rollout.restart-limit: ")
    assert problems_of(environ={"WATCHER_ROLLOUT_RESTART_LIMIT": "x"})[0].startswith(
        "environment WATCHER_ROLLOUT_RESTART_LIMIT: "
    )
    path = write(tmp_path, "rollout:\n  restart_limit: x\n")
    assert problems_of(file=path, environ={})[0].startswith("config file: ")


@pytest.mark.parametrize(
    ("yaml_value", "needle"),
    [
        ("true", "expected a number"),
        ("[1, 2]", "expected a number"),
        ("1e400", "expected a finite number"),
        (".nan", "expected a finite number"),
    ],
)
def test_yaml_typed_values_are_checked(tmp_path: Path, yaml_value: str, needle: str) -> None:
    """YAML booleans, lists and non-finite floats are no numbers."""
    path = write(tmp_path, f"rollout:\n  stable_seconds: {yaml_value}\n")
    problems = problems_of(file=path, environ={})
    assert len(problems) == 1
    assert needle in problems[0]


def test_yaml_mapping_is_not_a_string(tmp_path: Path) -> None:
    """A mapping where a string belongs is a problem."""
    path = write(tmp_path, "docker:\n  host: {a: 1}\n")
    assert "docker.host: expected a string" in problems_of(file=path, environ={})[0]


# --- every error at once --------------------------------------------------------------


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """One ConfigError lists problems from the file, the environment and the cross checks together."""
    path = write(
        tmp_path,
        """
rollout:
  stable_seconds: -3
  restart_limit: many
  stable_secs: 4
rolout:
  stable_seconds: 1
stats:
  enabled: maybe
web:
  listen_address: "9102"
""",
    )
    problems = problems_of(file=path, environ={"WATCHER_FOO_BAR": "1"})
    needles = [
        "unknown setting rollout.stable_secs",
        "unknown section rolout",
        "rollout.stable_seconds: must be at least 0",
        "rollout.restart_limit: expected an integer",
        "stats.enabled: expected true or false",
        "unknown variable WATCHER_FOO_BAR",
        "web.listen_address: expected host:port",
    ]
    assert_each_once(problems, needles)
    assert len(problems) == len(needles), problems


def test_problems_from_all_sources_at_once(tmp_path: Path) -> None:
    """Bad flags, bad environment and a bad file are reported together."""
    path = write(tmp_path, "stats:\n  concurrency: 0\n")
    problems = problems_of(
        file=path,
        environ={"WATCHER_DOCKER_SILENCE_SECONDS": "0", "WATCHER_NOPE": "x"},
        flags={"log.level": "loud", "web.nope": "1"},
    )
    assert_each_once(
        problems,
        [
            "stats.concurrency: must be at least 1",
            "docker.silence_seconds: must be at least 1",
            "unknown variable WATCHER_NOPE",
            "log.level: must be one of",
            "flags: unknown setting web.nope",
        ],
    )
    assert len(problems) == 5


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError problem naming the path, not an OSError."""
    missing = str(tmp_path / "nope.yml")
    problems = problems_of(file=missing, environ={})
    assert len(problems) == 1
    assert missing in problems[0]
    assert "No such file" in problems[0]


def test_missing_file_from_environment(tmp_path: Path) -> None:
    """A WATCHER_CONFIG_FILE that does not exist is a problem too."""
    missing = str(tmp_path / "nope.yml")
    assert missing in problems_of(environ={"WATCHER_CONFIG_FILE": missing})[0]


def test_directory_as_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that cannot be read as a file is a problem, not an exception."""
    assert str(tmp_path) in problems_of(file=str(tmp_path), environ={})[0]


@pytest.mark.parametrize("text", ["rollout: [unclosed\n", "rollout:\n  a: b\n c: d\n", "\tweb: {}\n"])
def test_invalid_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Invalid YAML is one single-line problem."""
    problems = problems_of(file=write(tmp_path, text), environ={})
    assert len(problems) == 1
    assert "not valid YAML" in problems[0]
    assert "\n" not in problems[0]


@pytest.mark.parametrize(("content", "problem"), UNREADABLE)
def test_unreadable_file_is_one_problem(
    clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, problem: str
) -> None:
    """A file that is not UTF-8, or nests deeper than PyYAML recurses, is one problem line: exit 2, no traceback."""
    path = tmp_path / "bad.yml"
    path.write_bytes(content)
    assert problems_of(file=str(path), environ={}) == [f"config file {path}: {problem}"]
    assert cli.main(["--config.file", str(path)]) == cli.EXIT_CONFIG
    assert capsys.readouterr().err == f"deployment-watcher: invalid configuration:\n  - config file {path}: {problem}\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("- web\n- docker\n", "top level must be a mapping"),
        ("just a string\n", "top level must be a mapping"),
        ("rollout: 5\n", "section 'rollout' must be a mapping"),
        ("rollout: [1]\n", "section 'rollout' must be a mapping"),
    ],
)
def test_badly_shaped_file(tmp_path: Path, text: str, needle: str) -> None:
    """A file that is not a mapping of sections is a problem."""
    problems = problems_of(file=write(tmp_path, text), environ={})
    assert len(problems) == 1
    assert needle in problems[0]


# --- parse_listen_address -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":9102", ("0.0.0.0", 9102)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:9102", ("::1", 9102)),
        ("[::]:9102", ("::", 9102)),
        ("localhost:0", ("localhost", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
        ("watcher.example.com:9102", ("watcher.example.com", 9102)),
    ],
)
def test_parse_listen_address(address: str, expected: tuple[str, int]) -> None:
    """host:port, :port and [v6]:port become (host, port); an empty host is all interfaces."""
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9102", ":x", ":70000", ":65536", ":-1", "", "localhost:", "[::1]"])
def test_parse_listen_address_rejects(address: str) -> None:
    """A missing, non-numeric or out-of-range port is a ValueError."""
    with pytest.raises(ValueError):
        parse_listen_address(address)


@pytest.mark.parametrize("address", ["9102", ":x", ":70000"])
def test_bad_listen_address_is_a_config_problem(address: str) -> None:
    """A bad web.listen_address is reported by load, naming the setting."""
    problems = problems_of(environ={"WATCHER_WEB_LISTEN_ADDRESS": address})
    assert len(problems) == 1
    assert problems[0].startswith("web.listen_address: ")


# --- options --------------------------------------------------------------------------


def test_options_flag_and_env_names() -> None:
    """web.listen_address is --web.listen-address and WATCHER_WEB_LISTEN_ADDRESS."""
    by_path = {option.path: option for option in config.options()}
    option = by_path["web.listen_address"]
    assert option.flag == "--web.listen-address"
    assert option.env == "WATCHER_WEB_LISTEN_ADDRESS"
    assert option.type is str
    assert option.default == ":9102"
    assert by_path["rollout.stable_seconds"].flag == "--rollout.stable-seconds"
    assert by_path["rollout.stable_seconds"].env == "WATCHER_ROLLOUT_STABLE_SECONDS"


def test_options_are_consistent_with_settings() -> None:
    """Every option has a unique flag and variable, a help text, and the Settings default."""
    options = list(config.options())
    defaults = Settings()
    assert len({o.flag for o in options}) == len(options)
    assert len({o.env for o in options}) == len(options)
    for option in options:
        assert option.help
        assert option.type in (str, bool, int, float)
        assert getattr(getattr(defaults, option.section), option.name) == option.default
        assert option.env.startswith(config.ENV_PREFIX)
        assert option.env != config.CONFIG_FILE_ENV


def test_defaults_pass_their_own_validation() -> None:
    """Feeding every default back as a flag gives the default settings."""
    flags = {o.path: str(o.default) for o in config.options()}
    assert config.load(environ={}, flags=flags) == Settings()


def test_as_yaml_round_trips(tmp_path: Path) -> None:
    """The printed YAML is itself a valid config file for the same settings."""
    settings = config.load(environ={}, flags={"rollout.stable_seconds": "3", "labels.track_compose": "true"})
    path = write(tmp_path, config.as_yaml(settings))
    assert config.load(file=path, environ={}) == settings


# --- cli ------------------------------------------------------------------------------


def test_cli_check_config(clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--check-config with a valid flag exits 0 and prints the effective YAML."""
    assert cli.main(["--check-config", "--rollout.stable-seconds", "3"]) == 0
    out, err = capsys.readouterr()
    assert "stable_seconds: 3.0" in out
    assert yaml.safe_load(out)["rollout"]["stable_seconds"] == 3.0
    assert err == ""


def test_cli_bad_flag_exits_2(clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag value exits 2 and stderr names the setting."""
    assert cli.main(["--rollout.stable-seconds", "-1", "--check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid configuration" in err
    assert "rollout.stable_seconds" in err
    assert "--rollout.stable-seconds" in err


def test_cli_flag_beats_environment(clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A flag wins over the environment variable of the same setting."""
    clean_environ.setenv("WATCHER_ROLLOUT_STABLE_SECONDS", "5")
    assert cli.main(["--check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["rollout"]["stable_seconds"] == 5.0
    assert cli.main(["--check-config", "--rollout.stable-seconds", "3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["rollout"]["stable_seconds"] == 3.0


def test_cli_config_file(clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--config.file reads the YAML file."""
    path = write(tmp_path, "retention:\n  history_versions: 4\n")
    assert cli.main(["--config.file", path, "--check-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["retention"]["history_versions"] == 4


def test_cli_lists_every_problem(clean_environ: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every problem is printed on its own line."""
    clean_environ.setenv("WATCHER_FOO_BAR", "1")
    assert cli.main(["--check-config", "--log.level", "loud", "--web.listen-address", "9102"]) == 2
    err = capsys.readouterr().err
    problem_lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problem_lines) == 3, err
    assert "WATCHER_FOO_BAR" in err
    assert "log.level" in err
    assert "web.listen_address" in err


def test_empty_known_section_is_fine_and_unknown_empty_section_is_not(tmp_path: Path) -> None:
    """`rollout:` with its keys commented out is valid; `foo: {}` names an unknown section."""
    good = tmp_path / "good.yml"
    good.write_text("rollout:\n  # stable_seconds: 5\n")
    assert config.load(file=str(good), environ={}) == Settings()
    bad = tmp_path / "bad.yml"
    bad.write_text("foo: {}\n")
    with pytest.raises(ConfigError, match="unknown section foo"):
        config.load(file=str(bad), environ={})


def test_allowed_hosts_are_host_names() -> None:
    """web.allowed_hosts takes names (a trailing dot and spaces are fine); a URL or a port is a problem."""
    ok = config.load(environ={}, flags={"web.allowed_hosts": " watcher.example.com, board-1.example. ,"})
    assert ok.web.allowed_hosts == "watcher.example.com, board-1.example. ,"
    problems = problems_of(environ={}, flags={"web.allowed_hosts": "http://watcher.example.com,watcher:9102,a b"})
    assert_each_once(problems, ["'http://watcher.example.com' is not a host name", "'watcher:9102'", "'a b'"])
