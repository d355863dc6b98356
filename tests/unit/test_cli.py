"""The command line: --help lists every subcommand; without one the watcher's flags still parse."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from watcher import cli, config


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
