"""Where the state file goes: a fixed place by default, never the directory the watcher started in."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.builders import quiet_settings, rich_state
from watcher import config
from watcher.config import StorageSettings
from watcher.domain.machine import Changes
from watcher.domain.model import State
from watcher.persistence import statefile
from watcher.persistence.statefile import StateFile, state_directory
from watcher.runtime.compose import Watcher
from watcher.runtime.saver import StateSaver
from watcher.selfmetrics import SelfMetrics


def no_home() -> Path:
    raise AssertionError("the home directory was not needed here")


def test_default_setting_is_auto(clean_environ: pytest.MonkeyPatch) -> None:
    """Without configuration storage.directory is auto, not a path relative to the working directory."""
    assert config.load(environ={}).storage.directory == statefile.AUTO


def test_auto_uses_the_system_directory_when_writable(tmp_path: Path) -> None:
    """An existing, writable system directory is the state directory."""
    system = tmp_path / "deployment-watcher"
    system.mkdir()
    assert state_directory("auto", environ={}, system=system, home=no_home) == system


def test_auto_uses_the_system_directory_when_it_can_be_created(tmp_path: Path) -> None:
    """A missing system directory under a writable parent is chosen, and left for the first save to create."""
    system = tmp_path / "lib" / "deployment-watcher"
    system.parent.mkdir()
    assert state_directory("auto", environ={}, system=system, home=no_home) == system
    assert not system.exists()


def test_auto_falls_back_to_the_xdg_state_home(tmp_path: Path) -> None:
    """A system directory that cannot be created (no parent) gives way to $XDG_STATE_HOME/deployment-watcher."""
    system = tmp_path / "missing" / "deployment-watcher"
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert (
        state_directory("auto", environ=environ, system=system, home=no_home)
        == tmp_path / "state" / "deployment-watcher"
    )


def test_auto_falls_back_to_the_home_directory(tmp_path: Path) -> None:
    """Without XDG_STATE_HOME, or with a relative one (invalid per the XDG spec), ~/.local/state is used."""
    system = tmp_path / "missing" / "deployment-watcher"
    expected = tmp_path / "home" / ".local" / "state" / "deployment-watcher"
    for environ in ({}, {"XDG_STATE_HOME": ""}, {"XDG_STATE_HOME": "relative/state"}):
        assert state_directory("auto", environ=environ, system=system, home=lambda: tmp_path / "home") == expected


def test_auto_skips_a_system_path_that_is_a_file(tmp_path: Path) -> None:
    """A file where the system directory should be is not usable."""
    system = tmp_path / "deployment-watcher"
    system.write_text("")
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert (
        state_directory("auto", environ=environ, system=system, home=no_home)
        == tmp_path / "state" / "deployment-watcher"
    )


def test_auto_skips_a_system_directory_without_write_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An existing system directory the process may not write in gives way to the XDG directory."""
    system = tmp_path / "deployment-watcher"
    system.mkdir()
    real_access = os.access
    # Root may write anywhere, so the refusal is simulated for this one directory.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != system and real_access(path, mode))
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert (
        state_directory("auto", environ=environ, system=system, home=no_home)
        == tmp_path / "state" / "deployment-watcher"
    )


def test_explicit_directory_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit directory is used as before (a relative one from the working directory), made absolute."""
    system = tmp_path / "deployment-watcher"
    system.mkdir()
    assert state_directory(str(tmp_path / "mine"), environ={}, system=system, home=no_home) == tmp_path / "mine"
    monkeypatch.chdir(tmp_path)
    assert state_directory("data", environ={}, system=system, home=no_home) == tmp_path / "data"


@pytest.mark.parametrize("setting", ["", "none", "None"])
def test_empty_or_none_keeps_no_state(tmp_path: Path, setting: str) -> None:
    """Empty or none: no state file at all."""
    assert state_directory(setting, environ={}, system=tmp_path, home=no_home) is None


def test_service_logs_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At start-up the service says where its state file is, as an absolute path."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="watcher.runtime.saver"):
        service = Watcher(quiet_settings(tmp_path, directory="relative"), registry=CollectorRegistry())
    assert (
        service.saver.state_file is not None and service.saver.state_file.path == tmp_path / "relative" / "state.json"
    )
    assert f"state file: {tmp_path / 'relative' / 'state.json'}" in caplog.messages


def test_service_says_when_no_state_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With storage.directory empty there is no state file, and the log says so."""
    with caplog.at_level(logging.INFO, logger="watcher.runtime.saver"):
        service = Watcher(quiet_settings(tmp_path, directory=""), registry=CollectorRegistry())
    assert service.saver.state_file is None
    assert any("nothing is kept across restarts" in message for message in caplog.messages)


async def test_the_last_line_says_what_the_saves_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher's last log line: the state saved (path, deployments), nothing to save yet, or a failed save."""
    saver = StateSaver(StorageSettings(directory=str(tmp_path)), metrics=SelfMetrics(CollectorRegistry()))
    current = State()
    saver.follow(lambda: current)
    path = tmp_path / statefile.FILE_NAME
    try:
        assert saver.all_saved() and saver.outcome() == f"nothing to save (0 deployments): {path} not written"
        current = rich_state()
        await saver.save()
        count = len(current.deployments)
        assert saver.all_saved() and saver.outcome() == f"state saved to {path} ({count} deployments)"

        def fails(state_file: StateFile, state: State, changes: Changes, compact: bool) -> bool:
            return False

        monkeypatch.setattr(StateSaver, "_write", staticmethod(fails))
        current = State()
        await saver.save()
        assert not saver.all_saved()
        assert saver.outcome() == f"the final save to {path} failed or did not finish: the state was NOT saved"
    finally:
        saver.close()
        saver.release()


def test_the_last_line_says_when_no_state_is_kept() -> None:
    saver = StateSaver(StorageSettings(directory="none"), metrics=SelfMetrics(CollectorRegistry()))
    assert saver.all_saved() and saver.outcome() == "no state kept (storage.directory: none)"
