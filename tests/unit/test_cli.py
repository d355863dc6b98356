"""The command line: --help lists every subcommand; without one the watcher's flags still parse."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from watcher import arguments, cli, config
from watcher.clients import notify, rollout, status
from watcher.persistence.statefile import state_directory
from watcher.runtime.compose import CannotListen


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`deployment-watcher --help` names each subcommand with its summary, beside the watcher's flags."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name, (_, summary) in cli.COMMANDS.items():
        assert f"deployment-watcher {name} [FLAGS]" in out
        assert name in out.split("options:")[0]  # listed before the long list of flags
        assert " ".join(summary.split()[:4]) in " ".join(out.split())
    assert "notify" in cli.COMMANDS
    for option in config.options():
        assert option.flag in out


def test_notify_help_is_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    """`deployment-watcher notify --help` shows the client's flags, not the watcher's."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["notify", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: deployment-watcher notify")
    assert "--deployment" in out and "--status" in out and "--web.listen-address" not in out


def test_notify_is_dispatched_with_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rest of the line goes to the command, whose exit code is the program's."""
    seen: list[list[str]] = []

    def command(argv: Sequence[str]) -> int:
        seen.append(list(argv))
        return 3

    monkeypatch.setitem(cli.COMMANDS, "notify", (command, "summary"))
    assert cli.main(["notify", "--deployment", "web", "--status", "success"]) == 3
    assert seen == [["--deployment", "web", "--status", "success"]]


def test_without_a_command_the_watcher_flags_parse() -> None:
    """No command: every flag of the watcher is accepted, and no command is set."""
    args = vars(cli.parser().parse_args(["--log.level", "debug", "--storage.directory", "/tmp/x", "--check-config"]))
    assert args["command"] is None
    assert args["log.level"] == "debug" and args["storage.directory"] == "/tmp/x" and args["check_config"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log.level=info", "notify"], "the command comes first: deployment-watcher notify"),
        (["--log.level=info", "notify", "--deployment", "x"], "the command comes first"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A command after the watcher's flags, an unknown flag or an unknown command: a usage error, exit 2."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rollout.s=5"], "unrecognized arguments: --rollout.s=5 (did you mean --rollout.stable-seconds?)"),
        (["--rollout.stable_seconds=5"], "--rollout.stable_seconds=5 (did you mean --rollout.stable-seconds?)"),
        (["--web.listen=:1"], "--web.listen=:1 (did you mean --web.listen-address?)"),
        (["--chek-config"], "unrecognized arguments: --chek-config (did you mean --check-config?)"),
        (["--log.level=info", "--zzz"], "unrecognized arguments: --zzz\n"),
        (["status", "--wat"], "unrecognized arguments: --wat (did you mean --watch?)"),
        (["rollout", "status", "web", "--timout", "5"], "--timout (did you mean --timeout?) 5"),
        (["rollout", "history", "web", "--env=x"], "--env=x (did you mean --environment?)"),
        (["notify", "--deploy=x", "--version=1", "--status=success"], "--deploy=x (did you mean --deployment?)"),
    ],
)
def test_abbreviated_or_mistyped_flags_are_refused_with_a_hint(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prefix of a flag used to set it silently (--rollout.s=5: rollout.stable_seconds): now a usage
    error, exit 2, naming the flag it may have meant."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_every_parser_refuses_abbreviations() -> None:
    """The watcher's parser, each command's, and their subcommands'."""

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [parser, *(p for sub in subs for child in sub.choices.values() for p in parsers(child))]

    every = [p for make in (cli.parser, notify.parser, rollout.parser, status.parser) for p in parsers(make())]
    assert len(every) >= 9  # the watcher and its 3 commands' entries, notify, rollout with 2, status
    assert all(isinstance(p, arguments.Parser) and not p.allow_abbrev for p in every)
    # Whole flags still parse, with = or a separate value.
    assert vars(cli.parser().parse_args(["--rollout.stable-seconds=5"]))["rollout.stable_seconds"] == "5"


def test_check_config_prints_the_state_file_it_would_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resolved as at start-up (auto: the system directory or the XDG one), as a YAML comment: the
    output stays a configuration file. Nothing is created."""
    monkeypatch.chdir(tmp_path)
    expected = {
        "auto": f"{state_directory('auto')}/state.json",
        "relative": f"{tmp_path}/relative/state.json",
        "none": "none, nothing is kept across restarts",
    }
    for setting, where in expected.items():
        assert cli.main(["--check-config", f"--storage.directory={setting}"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert out.splitlines()[-1] == f"# state file: {where} (storage.directory: {setting})"
        assert yaml.safe_load(out)["storage"]["directory"] == setting
    assert list(tmp_path.iterdir()) == []


def test_a_busy_or_forbidden_address_names_the_flag() -> None:
    busy = str(CannotListen("127.0.0.1:9102", OSError(errno.EADDRINUSE, "error while attempting to bind")))
    assert busy == (
        "cannot listen on 127.0.0.1:9102: address already in use; choose another address with "
        "--web.listen-address (or WATCHER_WEB_LISTEN_ADDRESS, web.listen_address in the config file)"
    )
    forbidden = str(CannotListen(":80", PermissionError(errno.EACCES, "error while attempting to bind")))
    assert forbidden.startswith("cannot listen on :80: permission denied (a port below 1024 needs root or ")


def test_the_watcher_serves_with_a_short_switch_interval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Worker threads (renderings, saves) hand the GIL back to the event loop within 1 ms, not CPython's 5."""
    intervals: list[float] = []
    served: list[object] = []

    async def serve(watcher: object) -> None:
        served.append(watcher)

    monkeypatch.setattr(sys, "setswitchinterval", intervals.append)
    monkeypatch.setattr(cli, "_serve", serve)
    monkeypatch.setattr(cli, "_stopped", lambda watcher, code: None)
    assert cli.main([f"--storage.directory={tmp_path}", "--web.listen-address=127.0.0.1:0"]) == cli.EXIT_OK
    assert intervals == [cli.SWITCH_INTERVAL_SECONDS] == [0.001] and len(served) == 1
